"""ONNX Runtime on the CPU: sequential execution with a fixed number of intra-op threads."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.runtimes.base import Runtime, Session


class OnnxSession(Session):
    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        inputs = self._session.get_inputs()
        self.input_names = [i.name for i in inputs]
        first = inputs[0].shape[0] if inputs[0].shape else None
        self.fixed_batch = first if isinstance(first, int) else None

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._session.run(None, feeds)


class OnnxRuntime(Runtime):
    name = "onnxruntime"
    package = "onnxruntime"
    extra = None  # a core dependency

    def load(self, path: Path, threads: int) -> Session:
        return OnnxSession(path, threads)

    def versions(self) -> dict[str, str]:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__}
