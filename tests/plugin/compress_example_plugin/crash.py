"""`crash-on-load`: ONNX Runtime, except that loading a model whose file name contains "crash" kills
the process with SIGSEGV, as a native runtime's bug would. Tests use it to check that one crashing
model does not take the other models' measurements down with it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from compress.runtimes.base import Session
from compress_example_plugin.runtime import BasicOnnxRuntime

MARKER = "crash"


class CrashOnLoad(BasicOnnxRuntime):
    name = "crash-on-load"

    def load(self, path: Path, threads: int) -> Session:
        if MARKER in Path(path).name:
            _no_core_file()
            os.kill(os.getpid(), signal.SIGSEGV)
        return super().load(path, threads)

    def versions(self) -> dict[str, str]:
        return {"crash-on-load": "1", **super().versions()}


def _no_core_file() -> None:
    """A deliberate crash needs no core dump left behind."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass
