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
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from compress.runtimes.base import Runtime, Session, is_quantized
from compress.runtimes.trtexec import (  # noqa: F401 - part of this runtime's interface
    TensorRTError,
    benchmark_command,
    build_command,
    infer_command,
    parse_outputs,
    parse_profile,
    parse_summary,
    parse_times,
    parse_version,
    profile_command,
    profile_shapes,
    run_trtexec,
)

JETPACK_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"


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

    def profile(self, feeds: dict[str, np.ndarray], runs: int) -> list[dict]:
        """trtexec's per-layer profile (--dumpProfile) of `runs` calls at these inputs' shapes."""
        shapes = {n: feeds[n].shape for n in self.input_names}
        with tempfile.TemporaryDirectory(prefix="compress-trt-") as tmp:
            out = Path(tmp) / "profile.json"
            run_trtexec(profile_command(self.trtexec, self.engine, shapes, runs, out))
            return parse_profile(json.loads(out.read_text()))


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
    channel_multiple = 32  # INT8 Tensor Core kernels want channel counts that are multiples of 32

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
