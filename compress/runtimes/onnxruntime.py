"""ONNX Runtime: sequential execution with a fixed number of intra-op threads, on the CPU or on the
execution provider a target names (CUDA, TensorRT, OpenVINO, oneDNN).

ONNX Runtime quietly runs on the CPU when a provider it was asked for cannot load (not built into
the installed package, or its libraries missing); a session whose first active provider is not the
one asked for is refused, so a CPU number is never reported as a GPU one.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from compress.runtimes.base import Runtime, Session

KERNEL_TIME = "_kernel_time"  # the suffix of a node's event in ONNX Runtime's profile
# A target's `execution_provider`: ONNX Runtime's name for it, and the package that brings it.
PROVIDERS = {
    "cpu": ("CPUExecutionProvider", "onnxruntime"),
    "cuda": ("CUDAExecutionProvider", "onnxruntime-gpu"),
    "tensorrt": ("TensorrtExecutionProvider", "onnxruntime-gpu"),
    "openvino": ("OpenVINOExecutionProvider", "onnxruntime-openvino"),
    "dnnl": ("DnnlExecutionProvider", "an ONNX Runtime build with oneDNN (--use_dnnl)"),
}
GPU_PROVIDERS = ("cuda", "tensorrt")


class ProviderError(RuntimeError):
    pass


def session_options(threads: int, optimization: str = "all"):
    """`optimization`: "all" (every graph transform, as deployed) or "extended" (activations fused
    into their layers, but without the layout pass that renames nodes, so profiles keep the
    exporter's node names)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}[optimization]  # fmt: skip
    options.log_severity_level = 3
    return options


def provider_list(provider: str) -> list[str]:
    """What a session is created with: the provider, then the CPU for the nodes it cannot run."""
    name = PROVIDERS[provider][0]
    return [name] if provider == "cpu" else [name, "CPUExecutionProvider"]


def check_provider(session, provider: str) -> str:
    """The session's first active provider, which must be the one asked for (ONNX Runtime falls
    back to the CPU without an error)."""
    import onnxruntime as ort

    name, package = PROVIDERS[provider]
    active = session.get_providers()
    if active and active[0] == name:
        return name
    raise ProviderError(f"ONNX Runtime did not start {name} (it would run on {', '.join(active) or 'nothing'}; "
                        f"providers in this onnxruntime: {', '.join(ort.get_available_providers())}): "
                        f"install {package} in place of onnxruntime, with the libraries it needs, "
                        "or measure on the CPU (execution_provider: cpu, device: cpu)")  # fmt: skip


def create_session(path: str, options, providers: list[str]):
    """An InferenceSession; ONNX Runtime's warning about a missing provider is left out, as
    check_provider raises an error that says more."""
    import onnxruntime as ort

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Specified provider")
        return ort.InferenceSession(path, options, providers=providers)


class OnnxSession(Session):
    def __init__(self, path: Path, threads: int, provider: str = "cpu", optimization: str = "all") -> None:
        self._path, self._threads, self._providers = str(path), threads, provider_list(provider)
        self._optimization = optimization
        self._session = create_session(self._path, session_options(threads, optimization), self._providers)
        self.provider = check_provider(self._session, provider)
        inputs = self._session.get_inputs()
        self.input_names = [i.name for i in inputs]
        first = inputs[0].shape[0] if inputs[0].shape else None
        self.fixed_batch = first if isinstance(first, int) else None

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._session.run(None, feeds)

    def profile(self, feeds: dict[str, np.ndarray], runs: int) -> list[dict]:
        """A second session with ONNX Runtime's profiler on (same threads), its JSON read and deleted."""
        with tempfile.TemporaryDirectory(prefix="compress-profile-") as tmp:
            options = session_options(self._threads, self._optimization)
            options.enable_profiling = True
            options.profile_file_prefix = os.path.join(tmp, "profile")
            session = create_session(self._path, options, self._providers)
            try:
                for _ in range(runs + 1):  # the first is the warm-up, left out by kernel_times
                    session.run(None, feeds)
            finally:
                written = session.end_profiling()
                del session  # nothing left to write into the folder once it is removed
            events = json.loads(Path(written).read_text(encoding="utf-8"))
        return kernel_times(events)


def kernel_times(events: list[dict]) -> list[dict]:
    """Mean ms per run of each node, in execution order, from ONNX Runtime's profile events
    (Chrome trace format): the "Node" events named NODE_kernel_time of every run but the first."""
    runs = sorted(e["ts"] + e["dur"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    if len(runs) < 2:
        return []
    warmed = runs[0]  # events before the first run ended belong to the warm-up
    totals: dict[tuple[str, str], float] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith(KERNEL_TIME) or e["ts"] < warmed:
            continue
        args = e.get("args", {})
        key = (args.get("node_name") or e["name"][: -len(KERNEL_TIME)], args.get("op_name", ""))
        totals[key] = totals.get(key, 0.0) + e["dur"]
    return [{"name": name, "op": op, "ms": us / 1000.0 / (len(runs) - 1)} for (name, op), us in totals.items()]


class OnnxRuntime(Runtime):
    name = "onnxruntime"
    package = "onnxruntime"
    extra = None  # a core dependency
    precisions = ("fp32",)  # it computes in the file's precision (an fp16 file runs in fp16); no hint to set
    channel_multiple = 16  # MLAS's blocked (NCHWc) convolutions take 16 channels a block on AVX-512

    @classmethod
    def int8_misfit(cls, quantization) -> str | None:
        if quantization.format == "onnx-qdq" and quantization.activations == "int8":
            return ("signed INT8 activations (S8S8) miss ONNX Runtime's fast x86 kernels, which take unsigned "
                    "activations (U8S8): set activations: uint8")  # fmt: skip
        return None

    def load(self, path: Path, threads: int) -> Session:
        return OnnxSession(path, threads, getattr(self.target, "execution_provider", None) or "cpu")

    def versions(self) -> dict[str, str]:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__}
