"""Accuracy-aware PTQ for the ONNX Runtime backend.

Quantize everything; if validation accuracy drops more than the budget, measure each weighted
layer's sensitivity (the accuracy regained by keeping it alone in floating point), then return
layers to floating point in that order until the budget holds, then try the earlier of them back in
INT8 one at a time, keeping each where the budget still holds. When several layers each break the
model, keeping any one of them in float regains nothing, so that ranking says nothing; layers are
then ranked by the accuracy each loses when it alone is quantized. Decisions use the validation
split; the test split stays for the report. If the budget cannot be met, the most accurate model
found is kept and the run says so.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from compress.measure.probe import predict, quick_p50
from compress.report.details import AccuracyControl, ControlStep
from compress.runtimes import open_session
from compress.stages import StageContext
from compress.stages.quantize import QuantizeStage

WEIGHTED = ("Conv", "Gemm", "MatMul", "ConvTranspose")


def val_outputs(path: Path, ctx: StageContext):
    return predict(open_session("onnxruntime", path, threads=0), ctx.task, ctx.splits.x_val)


def val_accuracy(path: Path, ctx: StageContext) -> float:
    return ctx.task.score(val_outputs(path, ctx), ctx.splits.y_val)


def allowed_drop(cfg: QuantizeStage, fp32_acc: float) -> float:
    """The budget in points; `relative` reads max_accuracy_drop as a percentage of fp32 accuracy."""
    return cfg.max_accuracy_drop if cfg.drop_type == "absolute" else fp32_acc * cfg.max_accuracy_drop / 100


def control_accuracy(cfg: QuantizeStage, fp32: Path, source: Path, excluded: list[str],
                     quantize: Callable[..., Path], out: Path, ctx: StageContext) -> dict:  # fmt: skip
    fp32_acc = val_accuracy(fp32, ctx)
    budget = allowed_drop(cfg, fp32_acc)
    acc = val_accuracy(quantize(excluded), ctx)
    ctx.log(f"{cfg.name}: fp32 {fp32_acc:.2f}%, int8 {acc:.2f}% on val (budget {budget:.2f} points)")
    steps = [
        {
            "float_layer": None,
            "val_accuracy": round(acc, 3),
            "p50_ms": round(quick_p50(open_session("onnxruntime", out, 1), ctx.task, ctx.splits.x_val), 4),
        }
    ]
    if fp32_acc - acc <= budget:
        return summary(fp32_acc, budget, steps, excluded, met=True, val_examples=len(ctx.splits.y_val))
    ranking, ranked_by = sensitivity(source, excluded, fp32_acc, acc, budget, quantize, ctx)
    best_acc, best_excluded = acc, list(excluded)
    shutil.copyfile(out, ctx.workdir / "best.onnx")
    current = list(excluded)
    for layer, gain in ranking:
        current.append(layer)
        acc = val_accuracy(quantize(current), ctx)
        p50 = quick_p50(open_session("onnxruntime", out, 1), ctx.task, ctx.splits.x_val)
        steps.append(
            {
                "float_layer": layer,
                "sensitivity": round(gain, 3),
                "val_accuracy": round(acc, 3),
                "p50_ms": round(p50, 4),
            }
        )
        ctx.log(f"{cfg.name}: {layer} back to float -> {acc:.2f}% on val, p50 {p50:.3f} ms")
        if acc > best_acc:
            best_acc, best_excluded = acc, list(current)
            shutil.copyfile(out, ctx.workdir / "best.onnx")
        if fp32_acc - acc <= budget:
            current = requantize(
                cfg, current[len(excluded) : -1], current, fp32_acc - budget, quantize, out, steps, ctx
            )
            (ctx.workdir / "best.onnx").unlink()
            return summary(
                fp32_acc, budget, steps, current, met=True, ranked_by=ranked_by, val_examples=len(ctx.splits.y_val)
            )
    ctx.log(
        f"warning: {cfg.name}: the {budget:.2f}-point budget cannot be met; keeping the most accurate model ({best_acc:.2f}% on val)"
    )
    (ctx.workdir / "best.onnx").replace(out)
    return summary(
        fp32_acc, budget, steps, best_excluded, met=False, ranked_by=ranked_by, val_examples=len(ctx.splits.y_val)
    )


def requantize(cfg: QuantizeStage, candidates: list[str], current: list[str], floor: float,
               quantize: Callable[..., Path], out: Path, steps: list[dict], ctx: StageContext) -> list[str]:  # fmt: skip
    """Once the budget holds, layers sent to float before the one that met it may not be needed: try
    each back in INT8, latest first, and keep it there while the accuracy stays at `floor` or above.
    `out` holds the model for `current` and is replaced by each better one."""
    probe = ctx.workdir / "probe.onnx"
    for layer in reversed(candidates):
        trial = [name for name in current if name != layer]
        acc = val_accuracy(quantize(trial, probe), ctx)
        step = {"int8_layer": layer, "val_accuracy": round(acc, 3), "kept": acc >= floor}
        if acc >= floor:
            current = trial
            shutil.copyfile(probe, out)
            step["p50_ms"] = round(quick_p50(open_session("onnxruntime", out, 1), ctx.task, ctx.splits.x_val), 4)
        steps.append({"float_layer": None, **step})
        ctx.log(f"{cfg.name}: {layer} back to INT8 -> {acc:.2f}% on val: {'kept' if acc >= floor else 'stays float'}")
    probe.unlink(missing_ok=True)
    return current


def sensitivity(source: Path, excluded: list[str], fp32_acc: float, base_acc: float, budget: float,
                quantize, ctx: StageContext) -> tuple[list[tuple[str, float]], str]:  # fmt: skip
    """Layers most sensitive first, with how they were ranked.

    First by the accuracy regained by keeping each layer alone in float. If no layer regains even a
    tenth of the shortfall, several layers each break the model, and the layers are ranked instead
    by the accuracy each loses when it alone is quantized (its sensitivity is then that loss); ties,
    as when many layers alone take the model to chance, go by the relative error of the outputs.
    """
    import onnx

    layers = [n.name for n in onnx.load(str(source)).graph.node if n.op_type in WEIGHTED and n.name not in excluded]
    probe = ctx.workdir / "probe.onnx"
    scores = [(layer, val_accuracy(quantize([*excluded, layer], probe), ctx) - base_acc) for layer in layers]
    ranked_by = "gain kept in float alone"
    shortfall = fp32_acc - budget - base_acc
    if layers and max(gain for _, gain in scores) < shortfall / 10:
        ctx.log("no layer alone regains accuracy in float; ranking layers by the drop each causes when quantized alone")
        ranked_by = "drop quantized alone"
        reference = val_outputs(source, ctx)
        losses = []
        for layer in layers:
            outputs = val_outputs(quantize([*excluded, *(other for other in layers if other != layer)], probe), ctx)
            error = float(((outputs - reference) ** 2).sum() / max(float((reference**2).sum()), 1e-12))
            losses.append((fp32_acc - ctx.task.score(outputs, ctx.splits.y_val), error, layer))
        scores = [(layer, drop) for drop, _, layer in sorted(losses, reverse=True)]
    probe.unlink(missing_ok=True)
    scores = sorted(scores, key=lambda g: -g[1])  # stable: keeps the tie order
    ctx.log(
        f"sensitivity of {len(layers)} layers measured ({ranked_by}); most sensitive: {scores[0][0] if scores else 'none'}"
    )
    return scores, ranked_by


def summary(fp32_acc: float, budget: float, steps: list[dict], float_nodes: list[str], met: bool,
            ranked_by: str | None = None, val_examples: int | None = None) -> dict:  # fmt: skip
    """The search as report details (AccuracyControl)."""
    control = AccuracyControl(fp32_val_accuracy=round(fp32_acc, 3), budget_points=round(budget, 3), met=met,
                              val_examples=val_examples,
                              steps=[ControlStep(**s) for s in steps], float_nodes=float_nodes,
                              **({"ranked_by": ranked_by} if ranked_by else {}))  # fmt: skip
    return control.dump()
