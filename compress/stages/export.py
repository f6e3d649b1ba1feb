"""`export`: PyTorch -> ONNX with a dynamic batch axis, checked against the module before it is kept."""

from __future__ import annotations

import warnings
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from compress.artifact import Artifact, Kind, load_torch
from compress.config import Strict
from compress.errors import StageError, first_line
from compress.runtimes import open_session
from compress.stages import Stage, StageContext


class ExportCheck(Strict):
    samples: int = Field(16, ge=1, le=10_000, description="test-split inputs compared")
    atol: float = Field(1e-4, gt=0)
    rtol: float = Field(1e-3, ge=0)


class ExportStage(Stage):
    """Export to ONNX and check it against the PyTorch module."""

    type: Literal["export"]
    format: Literal["onnx"] = "onnx"
    opset: int | None = Field(None, ge=13, le=23, description="default: the model's (17 for most)")
    exporter: Literal["torchscript", "dynamo"] | None = Field(None, description="default: the model's (torchscript)")
    dynamic_batch: bool | None = Field(None, description="default: yes, unless the model's graph cannot (detectors)")
    check: ExportCheck = Field(default_factory=ExportCheck)
    default_variant: ClassVar[str | None] = "fp32"

    @property
    def produces(self) -> Kind:
        return Kind.ONNX

    def settings(self, model) -> ExportStage:
        """These settings with the model's own choices where the recipe leaves them out."""
        chosen = {"opset": getattr(model, "opset", 17), "exporter": getattr(model, "exporter", "torchscript"),
                  "dynamic_batch": getattr(model, "dynamic_batch", True)}  # fmt: skip
        return self.model_copy(update={k: v for k, v in chosen.items() if getattr(self, k) is None})

    def run(self, artifact: Artifact, ctx: StageContext) -> Artifact:
        model = load_torch(artifact).eval()
        cfg = self.settings(model)
        x = ctx.splits.x_test
        # Trace on two inputs, check on others at another batch size: constants baked in by tracing
        # and shapes frozen to the traced batch both show up as a mismatch.
        trace = x[: 2 if cfg.dynamic_batch else 1]
        check = x[2 : 2 + cfg.check.samples] if len(x) > 2 else x
        path = ctx.workdir / "model.onnx"
        export_onnx(model, trace, path, cfg, ctx.task)
        max_diff, compared = check_export(model, check, path, cfg, ctx.task)
        ctx.log(f"{self.name}: ONNX matches PyTorch on {compared} (max |diff| {max_diff:.2e})")
        meta = {**artifact.meta, "macs": count_macs(model, ctx.task.inputs(trace[:1])), "format": "onnx",
                "precision": "fp32", "opset": cfg.opset, "exporter": cfg.exporter, "export_max_abs_diff": max_diff,
                "dynamic_batch": cfg.dynamic_batch, **detector_meta(model)}  # fmt: skip
        meta.pop("history", None)
        return Artifact(Kind.ONNX, path.name, lineage=[*artifact.lineage, self.name], meta=meta)


def detector_meta(model) -> dict:
    """What later stages and measurement need to know of a detector's graph: how to attribute its
    latency to parts and which ops INT8 leaves in float."""
    if not getattr(model, "is_detector", False):
        return {}
    return {"parts": model.parts, "keep_float": list(model.float_ops)}


def count_macs(model, example: tuple) -> int | None:
    """Multiply-accumulates per example, as torch-pruning counts them (None if it cannot)."""
    try:
        import torch_pruning as tp

        return int(tp.utils.count_ops_and_params(model, example)[0])
    except Exception:  # counting is informative only; never fail an export over it
        return None


def export_onnx(model, sample: np.ndarray, path, cfg: ExportStage, task) -> None:
    """Export with the task's input/output names and dynamic axes (batch, and sequence for text)."""
    import contextlib

    import torch

    inputs, outputs = list(task.input_names), list(task.output_names)
    args = task.inputs(sample)
    context = model.export_context() if hasattr(model, "export_context") else contextlib.nullcontext()
    try:
        with warnings.catch_warnings(), context:
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


def check_export(model, sample: np.ndarray, path, cfg: ExportStage, task) -> tuple[float, str]:
    """Run the ONNX file in ONNX Runtime and compare with PyTorch (as the task compares outputs);
    refuse a file that differs. Returns (max |diff|, what was compared)."""
    import onnx
    import torch

    onnx.checker.check_model(str(path))
    with torch.no_grad():
        expected = model(*task.inputs(sample)).numpy()
    try:
        session = open_session("onnxruntime", path, threads=1)
        batches = [sample] if cfg.dynamic_batch else [row[None] for row in sample]
        got = np.concatenate([session.run(task.feeds(b))[0] for b in batches])
    except Exception as exc:  # the runtime rejecting the graph is an export problem the user can act on
        raise StageError(f"ONNX Runtime cannot run the exported file: {first_line(exc)}",
                         hint=f"try the other exporter (`exporter:`) or another opset in stage '{cfg.name}'") from None  # fmt: skip
    ok, diff, compared = task.parity(expected, got, cfg.check.atol, cfg.check.rtol)
    if not ok:
        raise StageError(
            f"exported ONNX differs from PyTorch ({compared}): max |diff| {diff:.3e} exceeds atol {cfg.check.atol} + rtol {cfg.check.rtol}",
            hint="an unsupported op may have been exported wrongly; try the other exporter or raise check.atol knowingly",
        )
    return diff, compared
