"""Helpers every quantization backend shares."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.artifact import Artifact

CALIBRATION_BATCH = 32


def inherited(artifact: Artifact) -> dict:
    """Metadata a quantized model keeps from its float parent (params, MACs, pruning, ...)."""
    drop = ("precision", "export_max_abs_diff", "history", "format")
    return {k: v for k, v in artifact.meta.items() if k not in drop}


def count_quantized_ops(path: Path) -> int:
    """Ops (other than Q/DQ themselves) that take at least one dequantized input."""
    import onnx

    graph = onnx.load(str(path)).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    skip = ("QuantizeLinear", "DequantizeLinear")
    return sum(1 for n in graph.node if n.op_type not in skip and any(i in dequantized for i in n.input))


def calibration_batches(data: np.ndarray, step: int = CALIBRATION_BATCH) -> list[np.ndarray]:
    return [data[i : i + step] for i in range(0, len(data), step)]
