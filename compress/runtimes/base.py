"""The Runtime interface every backend implements, and the Session it returns."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Optional, Protocol

import numpy as np


class TargetSettings(Protocol):
    """What a runtime reads of its target: a TargetSpec here, plain JSON attributes on a device."""

    name: str
    device: str
    threads: int
    streams: int
    performance_hint: str
    precision: str
    shapes: str | None
    execution_provider: str | None
    batch_sizes: list
    eval_batch_size: int
    tensorrt: Any


# Variant precisions that a runtime computes in rather than reads from the file: a bf16 variant is
# its fp32 file run with the runtime's precision set to bf16, on runtimes whose `precisions` take it.
COMPUTED = ("bf16",)

QUANTIZATION_MARKERS = {"onnx": b"QuantizeLinear", "openvino": b"FakeQuantize"}


def is_quantized(path: Path, kind: str = "onnx") -> bool:
    """Whether a model file holds Q/DQ (ONNX) or FakeQuantize (OpenVINO IR) nodes. Op types are plain
    strings in both files, so a byte search answers without onnx or openvino (devices need neither)."""
    with open(path, "rb") as f:
        return QUANTIZATION_MARKERS[kind] in f.read()


class Session(ABC):
    """A loaded model, ready to run on batches of inputs."""

    input_names: list[str]
    fixed_batch: int | None = None  # set when the model only accepts one batch size
    # Set when the runtime computes in another precision than the file's (e.g. an inference hint).
    precision: str | None = None
    # What executed the model, as the runtime names it (ONNX Runtime's provider, OpenVINO's device).
    provider: str | None = None
    # Whether the runtime compiled the model for the shapes it runs at ("static") or once for any.
    shapes: str | None = None

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run one batch; returns the outputs in graph order."""

    def benchmark(self, feeds: dict[str, np.ndarray], protocol: Any) -> Optional[tuple]:
        """(samples in ms, capped?, the runtime's own summary) for runtimes that time themselves
        (trtexec); None, the default, has the shared protocol time `run`."""
        return None

    def throughput(self, feeds: dict[str, np.ndarray], seconds: float) -> Optional[tuple]:
        """(items per second, requests in flight) with requests run in parallel, for sessions whose
        target asks for throughput (OpenVINO streams); None, the default: one request at a time,
        whose throughput follows from its latency."""
        return None

    def profile(self, feeds: dict[str, np.ndarray], runs: int) -> Optional[list]:
        """Where one call's time goes, from the runtime's own profiler: one dict per executed node,
        {"name": node name, "op": op type, "ms": mean milliseconds per run}, over `runs` calls after
        one warm-up call, with this session's settings (threads). Profiling slows a call down, so
        these times are for shares, not absolute latency. None, the default: this runtime cannot
        profile. Leaves no files behind."""
        return None


class Runtime(ABC):
    name: ClassVar[str]
    package: ClassVar[str]  # import name checked by available()
    extra: ClassVar[str | None] = None  # pip extra that installs it, if optional
    formats: ClassVar[tuple[str, ...]] = ("onnx",)  # artifact kinds it can load (compress.artifact.Kind values)
    devices: ClassVar[tuple[str, ...]] = ("cpu", "gpu", "jetson")  # target devices it runs on
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "bf16", "fp16")  # target precisions it takes
    options: ClassVar[Optional[str]] = None  # the target section of its own settings, if any
    # A target's `shapes` it takes, if it compiles for input shapes (the first is its default).
    shape_modes: ClassVar[tuple[str, ...]] = ()
    # The INT8 format it runs well, which a quantize stage made `for:` one of its targets takes:
    # "u8s8" (unsigned activations, signed weights), "symmetric" (S8S8, zero point 0) or "nncf".
    int8_format: ClassVar[str] = "u8s8"
    # The channel multiple its kernels run at full width (`prune round_to: auto` takes the largest
    # among the recipe's targets): a pruned width between two multiples is padded or takes a slow path.
    channel_multiple: ClassVar[int] = 8

    @classmethod
    def int8_misfit(cls, quantization: Any) -> Optional[str]:
        """Why a quantized variant with these settings (report.details.Quantization) runs badly or
        not at all in this runtime, naming the setting to change; None when it fits."""
        return None

    def __init__(self, target: TargetSettings | None = None, example_shapes: dict[str, tuple] | None = None) -> None:
        self.target = target
        # Per-example input shapes (no batch dimension), for runtimes that compile for shape ranges.
        self.example_shapes = example_shapes

    @classmethod
    def available(cls) -> bool:
        try:
            importlib.import_module(cls.package)
        except ImportError:
            return False
        return True

    @abstractmethod
    def load(self, path: Path, threads: int) -> Session:
        """Load `path` to run with `threads` intra-op threads."""

    @abstractmethod
    def versions(self) -> dict[str, str]:
        """Versions of the runtime's packages, recorded with each measurement."""
