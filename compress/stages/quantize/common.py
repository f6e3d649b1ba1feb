"""Helpers every quantization backend shares."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np

from compress.artifact import Artifact

CALIBRATION_BATCH = 32


def inherited(artifact: Artifact) -> dict:
    """Metadata a quantized model keeps from its float parent (params, MACs, pruning, ...)."""
    drop = ("precision", "export_max_abs_diff", "history", "format", "keep_float")
    return {k: v for k, v in artifact.meta.items() if k not in drop}


def count_quantized_ops(path: Path) -> int:
    """Ops (other than Q/DQ themselves) that take at least one dequantized input."""
    import onnx

    graph = onnx.load(str(path)).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    skip = ("QuantizeLinear", "DequantizeLinear")
    return sum(1 for n in graph.node if n.op_type not in skip and any(i in dequantized for i in n.input))


def graph_readers(graph) -> dict[str, list]:
    """Tensor name -> the nodes of an ONNX graph that read it."""
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


@contextlib.contextmanager
def logger_level(logger: logging.Logger, level: int):
    """Set `logger` to `level` for a block: the quantizers log at INFO/WARNING per node or weight."""
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def calibration_batches(data: np.ndarray, step: int = CALIBRATION_BATCH) -> list[np.ndarray]:
    return [data[i : i + step] for i in range(0, len(data), step)]


# Only the weighted layers of a detector get INT8: quantizing the box arithmetic around them
# (offsets, exponentials, clipping) would move boxes by whole pixels.
WEIGHTED_OPS = ("Conv", "MatMul", "Gemm")


def kept_float(artifact: Artifact) -> list[str] | None:
    """The op types a model's graph must keep in float (a detector's NMS, RoIAlign, ...), or None."""
    return artifact.meta.get("keep_float")


def calibration_step(artifact: Artifact) -> int:
    """Calibration batch size: one image for graphs exported for batch 1."""
    return CALIBRATION_BATCH if artifact.meta.get("dynamic_batch", True) else 1


ROUTINE_OPS = {"add", "sub", "mul", "div", "concat", "split", "slice", "squeeze", "unsqueeze", "reshape",
               "transpose", "gather", "cast", "shape"}  # fmt: skip


def float_op_counts(path: Path, op_types: list[str]) -> dict[str, int]:
    """How many nodes of each of `op_types` run in float in a quantized ONNX or OpenVINO file."""
    # Arithmetic and shape ops are float in every INT8 graph; the count names the ones that matter.
    wanted = {t.lower(): t for t in op_types if t.lower() not in ROUTINE_OPS}
    counts: dict[str, int] = {}
    if path.suffix == ".xml":
        import openvino as ov

        types = [op.get_type_name().lower() for op in ov.Core().read_model(str(path)).get_ordered_ops()]
    else:
        import onnx

        types = [n.op_type.lower() for n in onnx.load(str(path)).graph.node]
    for found in types:
        if found in wanted:
            counts[wanted[found]] = counts.get(wanted[found], 0) + 1
    return counts
