"""Time per weighted layer of a PyTorch model, measured in ONNX Runtime on this machine, for
`prune` with `sensitivity_cost: latency`.

The model is exported and profiled on one thread with graph optimisations that fuse activations
into their layers but keep the exporter's node names (the layout pass, which renames nodes, is
left out), so each Conv / Gemm / MatMul node maps back to the module it came from.
"""

from __future__ import annotations

import json
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
    import onnxruntime as ort

    from compress.runtimes.onnxruntime import kernel_times
    from compress.stages.export import ExportStage, export_onnx

    sample = ctx.splits.x_train[:1]
    weighted = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))}
    with tempfile.TemporaryDirectory(prefix="compress-layers-") as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(model, sample, path, ExportStage(type="export", name="layer-times"), ctx.task)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.enable_profiling, options.profile_file_prefix = True, str(Path(tmp) / "profile")
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feeds = ctx.task.feeds(sample)
        for _ in range(RUNS + 1):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text(encoding="utf-8"))
        del session
    times: dict[str, float] = {}
    for node in kernel_times(events):
        name = module_of(node["name"], weighted)
        if node["op"] in WEIGHTED_OPS and name:
            times[name] = times.get(name, 0.0) + node["ms"]
    return times
