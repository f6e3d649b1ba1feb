"""`onnxruntime-basic`: ONNX Runtime with only basic graph optimizations, as its own runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.runtimes.base import Runtime, Session


class BasicSession(Session):
    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self._session.get_inputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._session.run(None, feeds)


class BasicOnnxRuntime(Runtime):
    name = "onnxruntime-basic"
    package = "onnxruntime"
    devices = ("cpu",)
    precisions = ("fp32",)

    def load(self, path: Path, threads: int) -> Session:
        return BasicSession(path, threads)

    def versions(self) -> dict[str, str]:
        import onnxruntime as ort

        return {"onnxruntime-basic": ort.__version__}
