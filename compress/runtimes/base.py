"""The Runtime interface every backend implements, and the Session it returns."""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np


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

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec(cls.package) is not None

    @abstractmethod
    def load(self, path: Path, threads: int) -> Session:
        """Load `path` to run with `threads` intra-op threads."""

    @abstractmethod
    def versions(self) -> dict[str, str]:
        """Versions of the runtime's packages, recorded with each measurement."""
