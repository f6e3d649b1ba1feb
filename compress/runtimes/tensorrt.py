"""TensorRT on an NVIDIA GPU or Jetson.

An engine is built from the exported ONNX file at the target's precision (a QDQ graph runs as
explicit INT8), with an optimisation profile covering the batch sizes measured, and cached under a
hash of the ONNX bytes, precision, shapes, build flags and TensorRT version. It then runs through
the `tensorrt` Python API (with PyTorch's CUDA memory) where both import, or through `trtexec`,
which JetPack ships; trtexec times the engine itself and its per-iteration times feed the same
latency record as every other runtime.

numpy-only at import (tensorrt and torch load inside the functions that use them): this module is
copied to remote devices as is.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from compress.runtimes.base import Runtime, Session, is_quantized

JETPACK_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"
PRECISION_FLAGS = {"fp32": [], "fp16": ["--fp16"], "bf16": ["--bf16"], "int8": ["--int8"], "best": ["--best"]}
WARMUP_MS = 500  # trtexec warms up by time, not by iterations


class TensorRTError(RuntimeError):
    pass


# ---------------------------------------------------------------------------- commands


def shape_spec(shapes: dict[str, tuple]) -> str:
    """trtexec's `name:1x3x224x224,other:1x128`; names holding ':' are quoted as trtexec asks."""
    return ",".join(f"{_quote_name(n)}:{'x'.join(str(d) for d in s)}" for n, s in shapes.items())


def _quote_name(name: str) -> str:
    return f"'{name}'" if ":" in name else name


def profile_shapes(example_shapes: dict[str, tuple], batches: list[int]) -> tuple[dict, dict, dict]:
    """min / opt / max shapes: batch 1, the first batch measured, and the largest batch used."""
    return tuple({n: (b, *s) for n, s in example_shapes.items()} for b in (1, batches[0], max(batches)))


def build_command(trtexec: str, onnx: Path, engine: Path, precision: str, quantized: bool, workspace_mb: int,
                  example_shapes: dict[str, tuple], batches: list[int], extra: list[str] = ()) -> list[str]:  # fmt: skip
    """trtexec arguments that build (and only build) an engine."""
    args = [trtexec, f"--onnx={onnx}", f"--saveEngine={engine}", f"--memPoolSize=workspace:{workspace_mb}",
            "--skipInference", *PRECISION_FLAGS[precision]]  # fmt: skip
    if quantized and precision not in ("int8", "best"):
        args.append("--int8")  # Q/DQ layers run in INT8 only with the INT8 builder flag (TensorRT 8)
    if example_shapes:
        low, opt, high = profile_shapes(example_shapes, batches)
        args += [f"--minShapes={shape_spec(low)}", f"--optShapes={shape_spec(opt)}", f"--maxShapes={shape_spec(high)}"]
    return [*args, *extra]


def benchmark_command(trtexec: str, engine: Path, shapes: dict[str, tuple], iterations: int, seconds: float,
                      times_json: Path) -> list[str]:  # fmt: skip
    """trtexec arguments that time an engine and export each iteration's times."""
    args = [trtexec, f"--loadEngine={engine}", f"--warmUp={WARMUP_MS}", f"--iterations={iterations}",
            f"--duration={max(1, math.ceil(seconds))}", "--useSpinWait", f"--exportTimes={times_json}"]  # fmt: skip
    return args + ([f"--shapes={shape_spec(shapes)}"] if shapes else [])


def infer_command(trtexec: str, engine: Path, inputs: dict[str, Path], shapes: dict[str, tuple],
                  output_json: Path) -> list[str]:  # fmt: skip
    """trtexec arguments that run one batch of given inputs and export the outputs."""
    spec = ",".join(f"{_quote_name(n)}:{p}" for n, p in inputs.items())
    args = [trtexec, f"--loadEngine={engine}", f"--loadInputs={spec}", f"--exportOutput={output_json}",
            "--iterations=1", "--warmUp=0", "--duration=0"]  # fmt: skip
    return args + ([f"--shapes={shape_spec(shapes)}"] if shapes else [])


# ---------------------------------------------------------------------------- trtexec output

_STAT = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\))\s*=\s*([-\d.e+]+)\s*ms")
_SUMMARY_LINES = {"Latency": "latency", "Enqueue Time": "enqueue", "H2D Latency": "h2d",
                  "GPU Compute Time": "gpu_compute", "D2H Latency": "d2h"}  # fmt: skip


def parse_summary(text: str) -> dict:
    """trtexec's '=== Performance summary ===' as numbers: throughput (qps), and min / max / mean /
    median / percentiles (ms) of host latency, enqueue time, H2D, GPU compute and D2H."""
    out: dict = {}
    summary = text.split("=== Performance summary ===", 1)[-1]
    for line in summary.splitlines():
        body = re.sub(r"^(\[[^\]]*\]\s*)+", "", line.strip())  # drop '[date] [I] ' prefixes
        key, _, rest = body.partition(":")
        if key == "Throughput":
            out["throughput_qps"] = float(rest.split()[0])
        elif key in _SUMMARY_LINES:
            stats = {}
            for name, pct, value in _STAT.findall(rest):
                stats[f"p{float(pct):g}" if pct else name] = float(value)
            out[_SUMMARY_LINES[key]] = stats
        elif key in ("Total Host Walltime", "Total GPU Compute Time"):
            out[key.lower().replace(" ", "_") + "_s"] = float(rest.split()[0])
    version = parse_version(text)
    if version:
        out["tensorrt"] = version
    return out


def parse_version(text: str) -> str | None:
    """'[TensorRT v8601]' -> '8.6.1', '[TensorRT v100200]' -> '10.2.0' (trtexec's first line)."""
    match = re.search(r"TensorRT v(\d+)\]", text)
    if not match:
        return None
    n = int(match.group(1))
    if n >= 100_000:  # TensorRT 10 and later: MMmmpp
        return f"{n // 10000}.{n // 100 % 100}.{n % 100}"
    return f"{n // 1000}.{n // 100 % 10}.{n % 100}"  # TensorRT 8 and earlier: Mmpp


def parse_times(data: list) -> list[float]:
    """Per-iteration host latency (ms) from trtexec's --exportTimes JSON."""
    out = []
    for entry in data:
        if "latencyMs" in entry:
            out.append(float(entry["latencyMs"]))
        elif "startH2DMs" in entry and "endD2HMs" in entry:
            out.append(float(entry["endD2HMs"]) - float(entry["startH2DMs"]))
    return out


def parse_outputs(data: list) -> list[np.ndarray]:
    """Tensors from trtexec's --exportOutput JSON: [{"name", "dimensions": "8x10", "values"}]."""
    arrays = []
    for entry in data:
        dims = [int(d) for d in str(entry["dimensions"]).split("x") if d]
        arrays.append(np.asarray(entry["values"], dtype=np.float32).reshape(dims))
    return arrays


# ---------------------------------------------------------------------------- engines


def engine_key(onnx: Path, precision: str, version: str, shapes: dict, workspace_mb: int, extra: list[str]) -> str:
    digest = hashlib.sha256(Path(onnx).read_bytes()).hexdigest()
    settings = json.dumps([digest, precision, version, {k: list(v) for k, v in shapes.items()}, workspace_mb,
                           list(extra)], sort_keys=True)  # fmt: skip
    return hashlib.sha256(settings.encode()).hexdigest()[:24]


def cached_engine(folder: Path, key: str, build) -> tuple[Path, bool]:
    """The engine for `key`, built by `build(path)` only when absent; returns (path, reused?). The
    build writes beside the final name, which appears only once the engine is complete."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.engine"
    if path.is_file():
        return path, True
    tmp = folder / f".{key}.{os.getpid()}.engine"
    try:
        build(tmp)
        if not tmp.is_file():
            raise TensorRTError("the engine build reported success but wrote no engine")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path, False


def run_trtexec(args: list[str], timeout: float = 3600) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise TensorRTError(f"trtexec did not finish within {timeout:.0f} s") from None
    log = done.stdout + done.stderr
    if done.returncode != 0:
        errors = [line for line in log.splitlines() if "[E]" in line or "Error" in line]
        raise TensorRTError(f"trtexec failed (exit {done.returncode}): {(errors or ['no error line'])[-1].strip()}")
    return log


def build_with_api(onnx: Path, out: Path, precision: str, quantized: bool, workspace_mb: int,
                   example_shapes: dict[str, tuple], batches: list[int]) -> None:  # fmt: skip
    """The tensorrt Python API's equivalent of build_command (pip's tensorrt has no trtexec)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    explicit = (
        0 if int(trt.__version__.split(".")[0]) >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    )
    network = builder.create_network(explicit)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx).read_bytes()):
        raise TensorRTError(f"TensorRT could not parse the ONNX file: {parser.get_error(0)}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    flags = {"fp16": ["FP16"], "bf16": ["BF16"], "int8": ["INT8"], "best": ["FP16", "INT8"]}.get(precision, [])
    for flag in flags + (["INT8"] if quantized else []):
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if example_shapes:
        profile = builder.create_optimization_profile()
        low, opt, high = profile_shapes(example_shapes, batches)
        for name in example_shapes:
            profile.set_shape(name, low[name], opt[name], high[name])
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTError("TensorRT could not build an engine for this model (see its log above)")
    Path(out).write_bytes(bytes(serialized))


# ---------------------------------------------------------------------------- sessions


class TrtexecSession(Session):
    """Runs an engine through trtexec: one process per batch of inputs, and trtexec's own timing."""

    def __init__(self, engine: Path, trtexec: str, input_names: list[str], version: str) -> None:
        self.engine, self.trtexec, self.input_names = engine, trtexec, input_names
        self.int32_ids = int(version.split(".")[0]) < 10  # TensorRT 8 turns INT64 inputs into INT32

    def _inputs(self, feeds: dict[str, np.ndarray], folder: Path) -> dict[str, Path]:
        paths = {}
        for i, name in enumerate(self.input_names):
            array = feeds[name]
            if self.int32_ids and array.dtype == np.int64:
                array = array.astype(np.int32)
            paths[name] = folder / f"input{i}.bin"
            np.ascontiguousarray(array).tofile(paths[name])
        return paths

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with tempfile.TemporaryDirectory(prefix="compress-trt-") as tmp:
            folder = Path(tmp)
            out = folder / "outputs.json"
            shapes = {n: feeds[n].shape for n in self.input_names}
            run_trtexec(infer_command(self.trtexec, self.engine, self._inputs(feeds, folder), shapes, out))
            return parse_outputs(json.loads(out.read_text()))

    def benchmark(self, feeds: dict[str, np.ndarray], protocol) -> tuple[list[float], bool, dict]:
        """trtexec times the engine; runs are lengthened until the p50 interval meets the protocol or
        the time cap is reached. Returns (samples in ms, capped?, parsed performance summary)."""
        from compress.agent.profiling import ci_width

        shapes = {n: feeds[n].shape for n in self.input_names}
        seconds, spent = protocol.min_seconds, 0.0
        with tempfile.TemporaryDirectory(prefix="compress-trt-") as tmp:
            times = Path(tmp) / "times.json"
            while True:
                log = run_trtexec(benchmark_command(self.trtexec, self.engine, shapes, protocol.min_iterations,
                                                    seconds, times))  # fmt: skip
                samples = parse_times(json.loads(times.read_text()))
                spent += sum(samples) / 1000.0
                wide = protocol.ci_target > 0 and ci_width(samples) > protocol.ci_target
                if not wide or spent >= protocol.max_seconds:
                    return samples, wide or len(samples) < protocol.min_iterations, parse_summary(log)
                seconds = min(seconds * 2, protocol.max_seconds - spent)


class TensorRTPythonSession(Session):
    """Runs an engine through the tensorrt Python API, with inputs and outputs in CUDA memory."""

    def __init__(self, engine: Path) -> None:
        import tensorrt as trt
        import torch

        self._trt, self._torch = trt, torch
        runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
        self._engine = runtime.deserialize_cuda_engine(engine.read_bytes())
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]

    def _dtype(self, name: str):
        return np.dtype(self._trt.nptype(self._engine.get_tensor_dtype(name)))

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        torch, context = self._torch, self._context
        keep = []
        for name in self.input_names:
            tensor = torch.from_numpy(np.ascontiguousarray(feeds[name], dtype=self._dtype(name))).cuda()
            context.set_input_shape(name, tuple(tensor.shape))
            context.set_tensor_address(name, tensor.data_ptr())
            keep.append(tensor)
        outputs = []
        for name in self.output_names:
            dtype = torch.from_numpy(np.zeros(0, self._dtype(name))).dtype
            tensor = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtype, device="cuda")
            context.set_tensor_address(name, tensor.data_ptr())
            outputs.append(tensor)
        stream = torch.cuda.current_stream()
        if not context.execute_async_v3(stream.cuda_stream):
            raise TensorRTError("TensorRT could not run the engine")
        stream.synchronize()
        return [t.cpu().numpy() for t in outputs]


def python_api_available() -> bool:
    try:
        import tensorrt  # noqa: F401
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def find_trtexec(command: str = "trtexec") -> str | None:
    found = shutil.which(command)
    if found:
        return found
    return JETPACK_TRTEXEC if command == "trtexec" and os.access(JETPACK_TRTEXEC, os.X_OK) else None


class TensorRTRuntime(Runtime):
    name = "tensorrt"
    package = "tensorrt"
    extra = "tensorrt"
    formats = ("onnx",)
    devices = ("gpu", "jetson")
    precisions = ("fp32", "bf16", "fp16", "int8", "best")
    options = "tensorrt"
    int8_format = "symmetric"  # explicitly quantized ONNX with zero point 0 only

    @classmethod
    def int8_misfit(cls, q) -> str | None:
        if q.method in ("dynamic", "int4"):
            return "TensorRT has no kernels for ONNX Runtime's dynamic or MatMulNBits quantization"
        fits = q.format != "onnx-qdq" or (q.activations == "int8" and q.symmetric)
        return None if fits else (f"TensorRT runs only symmetric INT8 (zero point 0), and this file has "
                                  f"{q.activations} activations with zero points")  # fmt: skip

    @classmethod
    def available(cls) -> bool:
        return python_api_available() or find_trtexec() is not None

    @property
    def settings(self):
        return self.target.tensorrt

    def mode(self) -> str:
        wanted = self.settings.mode
        if wanted in ("auto", "python") and python_api_available():
            return "python"
        if wanted in ("auto", "trtexec") and find_trtexec(self.settings.trtexec):
            return "trtexec"
        missing = "the tensorrt Python package with a CUDA build of torch" if wanted == "python" else "trtexec"
        raise TensorRTError(f"TensorRT mode '{wanted}' needs {missing}, which this machine lacks")

    def version(self) -> str:
        if getattr(self, "_version", None) is None:
            if self.mode() == "python":
                import tensorrt as trt

                self._version = trt.__version__
            else:
                args = [find_trtexec(self.settings.trtexec), "--help"]
                done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
                self._version = parse_version(done.stdout + done.stderr) or "unknown"
        return self._version

    def engine(self, onnx: Path, quantized: bool | None = None) -> tuple[Path, bool]:
        """The cached engine for `onnx` at the target's precision, built when missing."""
        opts, precision = self.settings, self.target.precision
        quantized = is_quantized(onnx) if quantized is None else quantized
        if precision == "int8" and not quantized:
            raise TensorRTError("precision int8 needs a quantized (QDQ) model; this one has no Q/DQ nodes: "
                                "add a quantize stage, or use precision fp16 or best")  # fmt: skip
        shapes = dict(self.example_shapes or {})
        batches = [*self.target.batch_sizes, self.target.eval_batch_size]
        key = engine_key(onnx, precision, self.version(), shapes, opts.workspace_mb, opts.extra_build_args)
        folder = Path(os.path.expanduser(opts.engine_cache or "~/.cache/compress/engines"))
        if self.mode() == "python":
            return cached_engine(folder, key, lambda out: build_with_api(
                onnx, out, precision, quantized, opts.workspace_mb, shapes, batches))  # fmt: skip
        trtexec = find_trtexec(opts.trtexec)
        return cached_engine(folder, key, lambda out: run_trtexec(build_command(
            trtexec, onnx, out, precision, quantized, opts.workspace_mb, shapes, batches, opts.extra_build_args)))  # fmt: skip

    def load(self, path: Path, threads: int) -> Session:
        quantized = is_quantized(path)
        engine, _ = self.engine(path, quantized)
        if self.mode() == "python":
            session = TensorRTPythonSession(engine)
        else:
            names = list(self.example_shapes or {})
            session = TrtexecSession(engine, find_trtexec(self.settings.trtexec), names, self.version())
        session.precision = "int8" if quantized else self.target.precision
        return session

    def versions(self) -> dict[str, str]:
        return {"tensorrt": self.version(), "tensorrt_mode": self.mode()}
