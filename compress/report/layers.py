"""Per-layer profiles in the report: time per op type for each variant on a target, what changed
against its parent, its slowest layers, and the measured shares the "will it be faster?" check
quotes. The figures come from the runtime's own profiler (see compress.agent.parts)."""

from __future__ import annotations

from compress.report.schema import Latency, LayerProfile, Report, TargetInfo, Variant

SHOWN_OPS = 6  # op-type columns in the table; the rest is summed as "other"
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "FakeQuantize"}
# ONNX Runtime's float kernels for weighted layers (its INT8 ones are QLinearConv, MatMulInteger, ...).
FLOAT_WEIGHTED = {"Conv", "FusedConv", "ConvTranspose", "MatMul", "FusedMatMul", "Gemm"}
FIXED_PARTS = ("postprocess", "preprocess")  # parts compression does not shrink
NOTABLE = 0.10  # a share worth naming

LAYERS_NOTE = ("Time per op type as the runtime names it after fusion (e.g. QLinearConv is an INT8 convolution), "
               "from its own profiler at the smallest batch measured, scaled to that batch's p50; the whole "
               "profile of each variant is in profiles/VARIANT@TARGET.json.")  # fmt: skip


def layers_latency(variant: Variant, target: str) -> Latency | None:
    """The variant's latency on `target` that has a profile, at the smallest batch size."""
    found = (x for x in variant.latency if x.target == target and x.layers)
    return min(found, key=lambda x: x.batch_size, default=None)


def op_table(report: Report, target: TargetInfo) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """One row per profiled variant: batch, p50, ms (share) in each of the op types that take the
    most time across variants, the rest, and the biggest changes against its parent."""
    found = [(v, lat) for v in report.variants if (lat := layers_latency(v, target.name))]
    weight: dict[str, float] = {}
    for _, lat in found:
        for op, ms in lat.layers.by_op.items():
            weight[op] = max(weight.get(op, 0.0), ms / lat.p50_ms if lat.p50_ms else 0.0)
    ops = sorted(weight, key=lambda op: -weight[op])[:SHOWN_OPS]
    rows = []
    for v, lat in found:
        rest = sum(ms for op, ms in lat.layers.by_op.items() if op not in ops)
        cells = [share(lat.layers.by_op.get(op) or None, lat.p50_ms) for op in ops]  # no time: "–"
        rows.append((v.name, str(lat.batch_size), f"{lat.p50_ms:.3f}", *cells, share(rest or None, lat.p50_ms),
                     changes(report, v, target.name)))  # fmt: skip
    return ("variant", "batch", "p50 ms", *(f"{op} ms" for op in ops), "other ms", "vs parent"), rows


def share(ms: float | None, total: float) -> str:
    """`ms` with its share of `total`, e.g. "0.412 (35 %)"; "–" for None."""
    return "–" if ms is None else f"{ms:.3f} ({100 * ms / total if total else 0:.0f} %)"


def changes(report: Report, v: Variant, target: str, count: int = 3) -> str:
    """The op types whose time changed most against the parent's, e.g. "Conv 0.412→0.051 ms"."""
    parent = report.variant(v.parent) if v.parent else None
    mine, theirs = layers_latency(v, target), layers_latency(parent, target) if parent else None
    if not (mine and theirs and mine.batch_size == theirs.batch_size):
        return "–"
    a, b = theirs.layers.by_op, mine.layers.by_op
    moved = sorted(set(a) | set(b), key=lambda op: -abs(b.get(op, 0.0) - a.get(op, 0.0)))[:count]
    return ", ".join(f"{op} {a.get(op, 0.0):.3f}→{b.get(op, 0.0):.3f} ms" for op in moved)


def slowest_layers(v: Variant, target: str) -> list[str]:
    lat = layers_latency(v, target)
    return [f"{n['name']} ({n['op']}): {n['ms']:.3f} ms" for n in lat.layers.top] if lat else []


def measured_reasons(report: Report, v: Variant, target: str) -> list[str]:
    """What the variant's profile on `target` says about its time: where most of it goes, time in
    quantize/dequantize nodes and in float kernels of a quantized model, fixed-cost parts, and the
    biggest changes against its parent."""
    lat = layers_latency(v, target)
    if lat is None:
        return []
    layers = lat.layers
    reasons = [f"measured at batch {lat.batch_size}: " + ", ".join(_top_ops(layers))]
    qdq = layers.share(QDQ_OPS)
    if qdq >= NOTABLE:
        reasons.append(f"{100 * qdq:.0f} % of its time is in quantize/dequantize nodes "
                       f"({_count(layers, QDQ_OPS)})")  # fmt: skip
    floats = layers.share(FLOAT_WEIGHTED)
    if v.precision == "int8" and lat.runtime == "onnxruntime" and floats >= NOTABLE:
        reasons.append(f"{100 * floats:.0f} % of its time is in float convolution/matrix kernels "
                       f"({_count(layers, FLOAT_WEIGHTED)}): these layers did not run in INT8")  # fmt: skip
    for part in FIXED_PARTS:
        ms = (lat.parts or {}).get(part)
        if ms and lat.p50_ms and ms / lat.p50_ms >= NOTABLE:
            reasons.append(f"{part} is {100 * ms / lat.p50_ms:.0f} % of end-to-end time, a cost compression "
                           "does not shrink")  # fmt: skip
    moved = changes(report, v, target)
    if moved != "–":
        reasons.append(f"against {v.parent}: {moved}")
    return reasons


def _top_ops(layers: LayerProfile, count: int = 3) -> list[str]:
    total = sum(layers.by_op.values())
    return [f"{op} {100 * ms / total:.0f} %" for op, ms in list(layers.by_op.items())[:count]] if total else []


def _count(layers: LayerProfile, ops: set[str]) -> str:
    found = [op for op in layers.by_op if op in ops]
    return ", ".join(f"{op} {layers.by_op[op]:.3f} ms" for op in found)
