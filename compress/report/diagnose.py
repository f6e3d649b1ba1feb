""" "Will it be faster?": flag pruned or quantized variants that are not really faster than their
parent, and name the likely reason visible in the ONNX graph or OpenVINO IR; flag accuracy budgets
that were not met."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.report.layers import measured_reasons
from compress.report.schema import Report, Variant

MIN_SPEEDUP = 1.10
ROUND_TO = 8
WEIGHTED_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
# Ops that ONNX Runtime's CPU provider runs in INT8 when wrapped in QuantizeLinear/DequantizeLinear.
INT8_OPS = WEIGHTED_OPS | {
    "Add", "Mul", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool", "Relu", "Clip", "Sigmoid", "Resize",
    "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Gather", "Softmax", "LeakyRelu", "Flatten", "Split",
    "Where", "Pad", "ArgMax", "Slice", "Expand", "Tile", "Identity", "Cast", "Shape",
}  # fmt: skip


def not_faster_warnings(report: Report, folder: Path) -> list[str]:
    """One warning per (variant, target) where a compressed variant is < 10 % faster than its parent."""
    warnings = []
    for target in report.targets:
        batch = report.batch_for(target.name)
        for v in report.variants:
            parent = report.variant(v.parent) if v.parent else None
            mine, theirs = v.latency_at(target.name, batch), parent.latency_at(target.name, batch) if parent else None
            if not (mine and theirs):
                continue
            speedup = theirs.p50_ms / mine.p50_ms
            v.speedup_vs_parent[target.name] = round(speedup, 4)
            if speedup < MIN_SPEEDUP and _compressed(v, parent):
                measured, graph = measured_reasons(report, v, target.name), likely_reasons(folder / v.path)
                said = measured + ([f"likely: {'; '.join(graph)}"] if graph else [])
                warnings.append(f"{v.name} is only {speedup:.2f}× faster than {parent.name} on {target.name} "
                                f"(batch {batch}); " + ("; ".join(said) or "no cause visible in the graph, "
                                                        "and no profile was measured"))  # fmt: skip
    return warnings


def format_warnings(report: Report) -> list[str]:
    """One warning per (quantized variant, target that loads its file) whose runtime cannot run its
    INT8 format well (Runtime.int8_misfit), naming the stage setting that makes the right one. The
    variant need not have been measured there: a runtime that refuses the format measures nothing."""
    from compress.runtimes import runtime_class

    warnings = []
    for target in report.targets:
        runtime = runtime_class(target.runtime)
        for v in report.variants:
            quantization = v.quantization()
            kind = "openvino" if v.path.endswith(".xml") else "onnx"  # v.format says more: onnx-qdq, ...
            if quantization is None or kind not in runtime.formats:
                continue
            misfit = runtime.int8_misfit(quantization)
            if misfit:
                made = f" (made for {', '.join(quantization.for_targets)})" if quantization.for_targets else ""
                warnings.append(f"{v.name}{made} on {target.name}: {misfit}; or quantize for this target with "
                                f"for: [{target.name}] in stage '{v.stages[-1]}'")  # fmt: skip
    return warnings


MIN_EXAMPLES = 3  # a budget under this many validation examples is within that split's noise


def budget_warnings(report: Report) -> list[str]:
    """One warning per variant whose accuracy-aware quantization did not meet its budget, and one per
    target where a budget met on the validation split was missed on test (against its parent)."""
    warnings = []
    by_name = {v.name: v for v in report.variants}
    for v in report.variants:
        control = v.accuracy_control()
        if control and not control.met:
            warnings.append(f"{v.name} did not meet its {control.budget_points}-point accuracy budget on the "
                            f"validation split; it is the most accurate model found ({len(control.float_nodes)} "
                            "layer(s) in float)")  # fmt: skip
        if control and (coarse := coarse_budget(control.budget_points, control.val_examples)):
            warnings.append(f"{v.name}: {coarse}")
        if control and control.met and v.parent in by_name:
            warnings += [f"{v.name} met its {control.budget_points}-point accuracy budget on the validation split "
                         f"but lost {drop:.2f} points on test on {target}" for target, drop in
                         drops_on_test(by_name[v.parent], v).items() if drop > control.budget_points]  # fmt: skip
    return warnings


def held_out_warnings(report: Report) -> list[str]:
    """One warning per variant and target whose metric fell on a held-out set by more than a point and
    more than twice as much as on the test split (both against the baseline): it fits its data's text
    and may not carry over to users' text."""
    base = report.variant(report.baseline)
    warnings = []
    for v in report.variants if base else []:
        for acc in v.accuracy_per_target:
            ref = base.accuracy_on(acc.target)
            if v is base or not ref or not acc.held_out or not ref.held_out:
                continue
            test_drop = ref.value - acc.value
            warnings += [f"{v.name} on {acc.target}: {acc.metric} fell {ref.held_out[n] - value:.2f} points on "
                         f"held-out {n} but {test_drop:.2f} on test: it fits the data's text and may not carry over "
                         "to other text; train on broader text (data.train_text)"
                         for n, value in acc.held_out.items()
                         if n in ref.held_out and ref.held_out[n] - value > max(1.0, 2 * test_drop)]  # fmt: skip
    return warnings


RUNTIME_GAP = 1.0  # points between one file's drops on two targets that no runtime's rounding explains


def runtime_warnings(report: Report) -> list[str]:
    """One warning per variant whose one file lost over RUNTIME_GAP points more on one target than on
    another (each against the baseline on that target): a runtime computes it differently (a
    static QDQ ViT kept its accuracy in ONNX Runtime and lost over 35 points in OpenVINO)."""
    base = report.variant(report.baseline)
    warnings = []
    for v in report.variants if base else []:
        drops = drops_on_test(base, v)
        if v is base or len(drops) < 2:
            continue
        worst, best = max(drops, key=drops.get), min(drops, key=drops.get)
        if drops[worst] - drops[best] > RUNTIME_GAP:
            remedy = (f"quantize for {worst} (for: [{worst}] in stage '{v.stages[-1]}')" if v.quantization()
                      else f"check {worst}'s precision hint")  # fmt: skip
            warnings.append(f"{v.name} lost {drops[worst]:.2f} points on {worst} but {drops[best]:.2f} on {best} "
                            f"(its one file, each against {base.name} on that target): the runtimes compute it "
                            f"differently, so deploy it only where it kept its accuracy, or {remedy}")  # fmt: skip
    return warnings


def coarse_budget(points: float, examples: int | None) -> str | None:
    """Why an accuracy budget judged on `examples` validation examples may not hold on test, if it may not."""
    if not examples or points >= MIN_EXAMPLES * 100 / examples:
        return None
    return (
        f"its {points}-point budget is worth fewer than {MIN_EXAMPLES} of the {examples} validation examples "
        f"(one is {100 / examples:.2f} points), so choices made against it can fit that split's noise and miss "
        "on test; a larger data.val_fraction makes them hold"
    )


def drops_on_test(parent: Variant, variant: Variant) -> dict[str, float]:
    """Points `variant` lost against `parent` on the test split, per target both were scored on."""
    before = {a.target: a.value for a in parent.accuracy_per_target}
    return {a.target: before[a.target] - a.value for a in variant.accuracy_per_target if a.target in before}


def _compressed(v: Variant, parent: Variant) -> bool:
    """Quantized relative to its parent, or pruned along the way."""
    return (v.precision != parent.precision) or v.pruning() is not None


def likely_reasons(path: Path) -> list[str]:
    if path.suffix == ".xml":
        return ir_reasons(path)
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    init = {t.name: t for t in graph.initializer}
    produced_by = {out: node for node in graph.node for out in node.output}
    reasons = []
    off = misaligned_convs(path)
    if off:
        reasons.append(
            f"{len(off)} convolution(s) with channel counts that are not multiples of {ROUND_TO} (set round_to)"
        )
    if any(n.op_type in ("DynamicQuantizeLinear", "MatMulInteger") for n in graph.node):
        reasons.append("dynamic quantization (DynamicQuantizeLinear/MatMulInteger): fast in ONNX Runtime, "
                       "but other runtimes may run it without INT8 kernels")  # fmt: skip
    quantized = any(n.op_type == "DequantizeLinear" for n in graph.node)
    if quantized:
        weighted = [n for n in graph.node if n.op_type in WEIGHTED_OPS and len(n.input) > 1
                    and (n.input[1] in init or _fed_by_dq(n, produced_by))]  # fmt: skip
        floats = [n.name for n in weighted if not _is_dq(n.input[1], produced_by)]  # float weights: float kernel
        if floats:
            reasons.append(f"{len(floats)} weighted layer(s) left in floating point, e.g. {floats[0]}")
        unfused = float_convs(graph, init, produced_by)
        if unfused:
            reasons.append(f"{len(unfused)} quantized convolution(s) with no quantizer on the output, e.g. "
                           f"{unfused[0]}: ONNX Runtime makes an integer QLinearConv only where one follows, and "
                           "runs the others in float, dequantizing their weights on every call")  # fmt: skip
        if _signed_activations(graph, init):
            reasons.append(
                "signed INT8 activations (S8S8): ONNX Runtime's fast x86 kernels take unsigned activations (U8S8)"
            )
        wrapped = sorted({n.op_type for n in graph.node if n.op_type not in INT8_OPS | {"QuantizeLinear", "DequantizeLinear"}
                          and _fed_by_dq(n, produced_by)})  # fmt: skip
        if wrapped:
            reasons.append(f"quantize/dequantize pairs around ops without INT8 kernels: {', '.join(wrapped)}")
    return reasons


IR_WEIGHTED = {"Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData"}
IR_PASS_THROUGH = {"Convert", "Multiply", "Subtract", "Reshape", "Transpose"}  # between a weight and its layer
IR_INT_TYPES = {"i8", "u8", "i4", "u4"}


def ir_reasons(path: Path) -> list[str]:
    """The same check for an OpenVINO IR, read as XML: weighted layers whose weights are not INT8."""
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    layers = {layer.get("id"): layer for layer in root.iter("layer")}
    source = {(e.get("to-layer"), e.get("to-port")): e.get("from-layer") for e in root.iter("edge")}

    def weight_kind(layer_id: str) -> str | None:
        """'int8' or 'float' for a weight reaching input 1 of `layer_id`; None for an activation."""
        node = source.get((layer_id, "1"))
        while node is not None:
            layer = layers[node]
            kind = layer.get("type")
            if kind == "FakeQuantize":
                return "int8"
            if kind == "Const":
                data = layer.find("data")
                return "int8" if data is not None and data.get("element_type") in IR_INT_TYPES else "float"
            if kind not in IR_PASS_THROUGH:
                return None
            node = source.get((node, min((p.get("id") for p in layer.find("input")), key=int)))
        return None

    kinds = {layer.get("name"): weight_kind(i) for i, layer in layers.items() if layer.get("type") in IR_WEIGHTED}
    floats = [name for name, kind in kinds.items() if kind == "float"]
    if floats and len(floats) == sum(kind is not None for kind in kinds.values()):
        return [f"no weighted layer runs in INT8: all {len(floats)} are in floating point"]
    return [f"{len(floats)} weighted layer(s) left in floating point, e.g. {floats[0]}"] if floats else []


def float_convs(graph, init: dict, produced_by: dict) -> list[str]:
    """Convolutions with dequantized input and weight whose output goes to no QuantizeLinear: ONNX
    Runtime's QDQ fusion needs DequantizeLinear -> Conv -> QuantizeLinear for QLinearConv. A Relu or
    Clip between counts only where the quantizer's zero point is its type's least value, which makes
    it redundant (ONNX Runtime then drops it)."""
    from onnx import numpy_helper

    from compress.stages.quantize.common import graph_readers

    readers = graph_readers(graph)

    def clamps_at_zero(quantize) -> bool:
        zero = init.get(quantize.input[2]) if len(quantize.input) > 2 else None
        value = numpy_helper.to_array(zero) if zero is not None else np.zeros((), np.uint8)
        return value.size == 1 and int(value.reshape(-1)[0]) == np.iinfo(value.dtype).min

    def quantized_output(name: str) -> bool:
        after = readers.get(name, [])
        if len(after) == 1 and after[0].op_type in ("Relu", "Clip"):
            after = readers.get(after[0].output[0], [])
            return len(after) == 1 and after[0].op_type == "QuantizeLinear" and clamps_at_zero(after[0])
        return len(after) == 1 and after[0].op_type == "QuantizeLinear"

    return [n.name or n.output[0] for n in graph.node if n.op_type == "Conv" and len(n.input) > 1
            and _is_dq(n.input[0], produced_by) and _is_dq(n.input[1], produced_by)
            and not quantized_output(n.output[0])]  # fmt: skip


def _signed_activations(graph, init: dict) -> bool:
    """True when activations (not weights) are quantized to int8."""
    from onnx import TensorProto

    for node in graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in init and len(node.input) > 2:
            zero_point = init.get(node.input[2])
            if zero_point is not None and zero_point.data_type == TensorProto.INT8:
                return True
    return False


def _is_dq(name: str, produced_by: dict) -> bool:
    return produced_by.get(name) is not None and produced_by[name].op_type == "DequantizeLinear"


def _fed_by_dq(node, produced_by: dict) -> bool:
    return any(_is_dq(i, produced_by) for i in node.input)


def misaligned_convs(path: Path) -> list[str]:
    """Convolutions over a spatial map (not squeeze-and-excitation convs on a pooled 1x1 vector, whose
    cost is negligible) whose output channels are not a multiple of ROUND_TO.

    Channel counts come from ONNX shape inference, so a weight is read correctly whatever produces it
    (an initializer, a DequantizeLinear, a Constant node, a Reshape); a count that cannot be inferred
    is not blamed."""
    import onnx

    try:
        model = onnx.shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False))
    except Exception:  # noqa: BLE001 - an odd graph: no channel diagnosis rather than a crash
        return []
    graph = model.graph
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    for info in [*graph.value_info, *graph.input, *graph.output]:
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = [d.dim_value if d.HasField("dim_value") else 0 for d in dims]
    off = []
    for node in graph.node:
        if node.op_type != "Conv" or len(node.input) < 2:
            continue
        weight, output = shapes.get(node.input[1]) or [0], shapes.get(node.output[0]) or []
        pooled = len(output) > 2 and all(d == 1 for d in output[2:])
        if weight[0] % ROUND_TO and not pooled:
            off.append(node.name)
    return off
