"""`export`: PyTorch -> ONNX with a dynamic batch axis, checked against the module before it is kept."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from compress.artifact import Artifact, load_torch
from compress.errors import StageError, first_line
from compress.recipe import ExportStage
from compress.runtimes.onnxruntime import OnnxSession
from compress.stages import StageContext


def run(cfg: ExportStage, artifact: Artifact, ctx: StageContext) -> Artifact:
    model = load_torch(artifact).eval()
    x = ctx.splits.x_test
    # Trace on two inputs, check on others at another batch size: constants baked in by tracing
    # and shapes frozen to the traced batch both show up as a mismatch.
    trace = x[: 2 if cfg.dynamic_batch else 1]
    check = x[2 : 2 + cfg.check.samples] if len(x) > 2 else x
    path = ctx.workdir / "model.onnx"
    export_onnx(model, trace, path, cfg, ctx.task)
    max_diff = check_export(model, check, path, cfg, ctx.task)
    ctx.log(f"{cfg.name}: ONNX matches PyTorch on {len(check)} test inputs (max |diff| {max_diff:.2e})")
    meta = {**artifact.meta, "macs": count_macs(model, ctx.task.inputs(trace[:1])), "format": "onnx", "precision": "fp32", "opset": cfg.opset,
            "exporter": cfg.exporter, "export_max_abs_diff": max_diff}  # fmt: skip
    meta.pop("history", None)
    return Artifact("onnx", path.name, lineage=[*artifact.lineage, cfg.name], meta=meta)


def count_macs(model: torch.nn.Module, example: tuple) -> int | None:
    """Multiply-accumulates per example, as torch-pruning counts them (None if it cannot)."""
    try:
        import torch_pruning as tp

        return int(tp.utils.count_ops_and_params(model, example)[0])
    except Exception:  # counting is informative only; never fail an export over it
        return None


def export_onnx(model: torch.nn.Module, sample: np.ndarray, path, cfg: ExportStage, task) -> None:
    """Export with the task's input/output names and dynamic axes (batch, and sequence for text)."""
    inputs, outputs = list(task.input_names), list(task.output_names)
    args = task.inputs(sample)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if cfg.exporter == "dynamo":
                dims = {n: {axis: torch.export.Dim(label) for axis, label in spec.items()}
                        for n, spec in task.dynamic_axes(cfg.dynamic_batch).items() if n in inputs}  # fmt: skip
                torch.onnx.export(model, args, str(path), dynamo=True, opset_version=cfg.opset,
                                  input_names=inputs, output_names=outputs, dynamic_shapes=dims or None,
                                  verbose=False, optimize=True, external_data=False)  # fmt: skip
            else:
                torch.onnx.export(model, args, str(path), dynamo=False, opset_version=cfg.opset,
                                  input_names=inputs, output_names=outputs,
                                  dynamic_axes=task.dynamic_axes(cfg.dynamic_batch) or None,
                                  do_constant_folding=True)  # fmt: skip
    except Exception as exc:  # exporters raise many types; the user needs the first line and a next step
        other = "torchscript" if cfg.exporter == "dynamo" else "dynamo"
        raise StageError(f"ONNX export failed ({cfg.exporter} exporter): {first_line(exc)}",
                         hint=f"try `exporter: {other}` or another opset in stage '{cfg.name}'") from None  # fmt: skip


def check_export(model: torch.nn.Module, sample: np.ndarray, path, cfg: ExportStage, task) -> float:
    """Run the ONNX file in ONNX Runtime and compare with PyTorch; refuse a file that differs."""
    import onnx

    onnx.checker.check_model(str(path))
    with torch.no_grad():
        expected = model(*task.inputs(sample)).numpy()
    session = OnnxSession(path, threads=1)
    batches = [sample] if cfg.dynamic_batch else [row[None] for row in sample]
    got = np.concatenate([session.run(task.feeds(b))[0] for b in batches])
    diff = float(np.max(np.abs(got - expected)))
    if not np.allclose(got, expected, atol=cfg.check.atol, rtol=cfg.check.rtol):
        raise StageError(
            f"exported ONNX differs from PyTorch: max |diff| {diff:.3e} exceeds atol {cfg.check.atol} + rtol {cfg.check.rtol}",
            hint="an unsupported op may have been exported wrongly; try the other exporter or raise check.atol knowingly",
        )
    return diff
