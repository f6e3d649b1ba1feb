"""trtexec, NVIDIA's TensorRT command-line tool: the commands compress runs (build, time, infer,
profile) and the parsing of what it prints and exports. Standard library and numpy only: this
module is copied to remote devices (JetPack ships trtexec)."""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path

import numpy as np

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


def profile_command(trtexec: str, engine: Path, shapes: dict[str, tuple], runs: int, profile_json: Path) -> list[str]:
    """trtexec arguments that time each layer of an engine over `runs` calls, in a run of its own
    (profiling slows the end-to-end timing), and export the per-layer times."""
    args = [trtexec, f"--loadEngine={engine}", f"--warmUp={WARMUP_MS}", f"--iterations={runs}", "--duration=0",
            "--dumpProfile", "--separateProfileRun", f"--exportProfile={profile_json}"]  # fmt: skip
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


def parse_profile(data: list) -> list[dict]:
    """Per-layer times from trtexec's --exportProfile JSON ([{"count": N}, {"name", "timeMs",
    "averageMs", ...}, ...]) as {"name", "op", "ms" per call} in the engine's order."""
    count = next((int(e["count"]) for e in data if "count" in e), 0)
    out = []
    for entry in data:
        if "name" not in entry:
            continue
        ms = entry.get("averageMs")
        ms = float(ms) if ms is not None else float(entry.get("timeMs", 0.0)) / max(count, 1)
        out.append({"name": str(entry["name"]), "op": layer_op(str(entry["name"])), "ms": ms})
    return out


_SUFFIX = re.compile(r"_\d+$")


def layer_op(name: str) -> str:
    """An op type for a TensorRT layer, read from its name: the ONNX op types it fused ("Conv+Relu"
    for "/l1/conv/Conv + /l1/relu/Relu"), or the kind of layer TensorRT made itself."""
    for prefix, op in (("Reformatting", "Reformat"), ("{ForeignNode", "ForeignNode"), ("PWN(", "PointWise"),
                       ("Myelin", "Myelin")):  # fmt: skip
        if name.startswith(prefix):
            return op
    parts = [_SUFFIX.sub("", part.strip().rsplit("/", 1)[-1]) for part in name.split(" + ")]
    return "+".join(part for part in parts if part) or name


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
