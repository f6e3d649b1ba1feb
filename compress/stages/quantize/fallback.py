"""QAT as the last step of accuracy-aware PTQ (`quantize` with `fallback:`).

When PTQ misses its budget on validation, or meets it only by keeping layers in float (slower, and
fitted to the validation split by the choice of layers), QAT fine-tunes the PyTorch model the
stage's input was exported from, with every layer in INT8. Its model replaces PTQ's when it meets
the budget on validation; when PTQ missed the budget too, the more accurate of the two is kept.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from compress.stages import StageContext
from compress.stages.quantize import QuantizeStage
from compress.stages.quantize.accuracy_control import val_accuracy


def needed(cfg: QuantizeStage, control: dict | None) -> str | None:
    """Why the fallback runs, or None."""
    if cfg.fallback is None or control is None:
        return None
    if not control["met"]:
        return "PTQ missed the budget"
    return f"PTQ kept {len(control['float_nodes'])} layer(s) in float" if control["float_nodes"] else None


def run_fallback(cfg: QuantizeStage, control: dict, out: Path, meta: dict, ctx: StageContext) -> dict:
    """Run QAT when `needed`; returns the details of the model left at `out`."""
    reason = needed(cfg, control)
    if reason is None:
        return meta
    from compress.stages.quantize.qat import run_qat

    ctx.log(f"{cfg.name}: {reason}; quantization-aware training from '{cfg.fallback_from}'")
    work = ctx.workdir / "fallback"
    work.mkdir(exist_ok=True)
    qat_cfg = cfg.model_copy(update={"method": "qat", "qat": cfg.fallback, "max_accuracy_drop": None,
                                     "fallback": None})  # fmt: skip
    try:
        qat = run_qat(qat_cfg, ctx.refs[cfg.fallback_from], dataclasses.replace(ctx, workdir=work))
        qat_acc, ptq_acc = val_accuracy(work / "model.onnx", ctx), val_accuracy(out, ctx)
        meets = control["fp32_val_accuracy"] - qat_acc <= control["budget_points"]
        use = meets or (not control["met"] and qat_acc > ptq_acc)
        record = {"method": "qat", "reason": reason, "ptq_val_accuracy": round(ptq_acc, 3),
                  "qat_val_accuracy": round(qat_acc, 3), "used": "qat" if use else "ptq"}  # fmt: skip
        ctx.log(f"{cfg.name}: QAT {qat_acc:.2f}% on val against PTQ's {ptq_acc:.2f}%: keeping {record['used']}")
        if use:
            (work / "model.onnx").replace(out)
            (ctx.workdir / "calibration.json").unlink(missing_ok=True)  # PTQ's ranges; they describe no model now
            return {**qat.meta, "accuracy_control": control, "fallback": record}
        return {**meta, "fallback": record}
    finally:
        shutil.rmtree(work, ignore_errors=True)
