"""The Runtime interface every backend implements, and the Session it returns."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:
    from compress.targets import TargetSpec


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

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run one batch; returns the outputs in graph order."""


class Runtime(ABC):
    name: ClassVar[str]
    package: ClassVar[str]  # import name checked by available()
    extra: ClassVar[str | None] = None  # pip extra that installs it, if optional
    formats: ClassVar[tuple[str, ...]] = ("onnx",)  # artifact formats it can load

    def __init__(self, target: TargetSpec | None = None, example_shapes: dict[str, tuple] | None = None) -> None:
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
