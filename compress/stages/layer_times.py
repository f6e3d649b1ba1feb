"""Time per weighted layer of a PyTorch model, measured in ONNX Runtime on this machine, for
`prune` with `sensitivity_cost: latency`.

The model is exported and profiled on one thread with graph optimisations that fuse activations
into their layers but keep the exporter's node names (the layout pass, which renames nodes, is
left out), so each Conv / Gemm / MatMul node maps back to the module it came from.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from torch import nn

from compress.stages import StageContext

WEIGHTED_OPS = ("Conv", "FusedConv", "Gemm", "MatMul", "FusedMatMul", "ConvTranspose")
RUNS = 50


def module_of(node: str, known: set[str]) -> str | None:
    """The module in `known` that an exported node belongs to, from the scope path in its name:
    '/layers/layers.1/shortcut/shortcut.0/Conv' -> 'layers.1.shortcut.0' (a container's segment is
    dropped when its child's repeats it); fused nodes add segments after the op
    ('/blocks/blocks.0/attn/k/MatMul/MatMulAddFusion'), so the longest known prefix is taken."""
    parts = node.strip("/").split("/")
    for end in range(len(parts), 0, -1):
        head = parts[:end]
        kept = [p for i, p in enumerate(head) if not (i + 1 < len(head) and head[i + 1].startswith(p + "."))]
        if ".".join(kept) in known:
            return ".".join(kept)
    return None


def layer_times(model: nn.Module, ctx: StageContext) -> dict[str, float]:
    """{module name: ms per call at batch 1} for the model's Conv and Linear modules that the
    profile names; empty when none could be matched."""
    from compress.runtimes.onnxruntime import OnnxSession
    from compress.stages.export import ExportStage, export_onnx

    sample = ctx.splits.x_train[:1]
    weighted = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))}
    with tempfile.TemporaryDirectory(prefix="compress-layers-") as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(model, sample, path, ExportStage(type="export", name="layer-times"), ctx.task)
        profile = OnnxSession(path, threads=1, optimization="extended").profile(ctx.task.feeds(sample), RUNS)
    times: dict[str, float] = {}
    for node in profile:
        name = module_of(node["name"], weighted)
        if node["op"] in WEIGHTED_OPS and name:
            times[name] = times.get(name, 0.0) + node["ms"]
    return times
