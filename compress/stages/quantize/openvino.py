"""`quantize` with `backend: openvino`: NNCF post-training quantization to an OpenVINO IR.

Follows NNCF's `quantize` (min-max statistics, fast bias correction) and, with
`max_accuracy_drop`, `quantize_with_accuracy_control`, which returns the most sensitive layers to
floating point until the validation metric is within budget.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from compress.artifact import Artifact, Kind
from compress.errors import StageError, first_line
from compress.report.details import Calibration, Quantization
from compress.selection import matches
from compress.stages import StageContext
from compress.stages.quantize import QuantizeStage
from compress.stages.quantize.common import float_op_counts, inherited, kept_float, logger_level

WEIGHTED = ("Convolution", "GroupConvolution", "MatMul")


def run_openvino(cfg: QuantizeStage, artifact: Artifact, ctx: StageContext) -> Artifact:
    import openvino as ov

    model = ov.Core().read_model(str(artifact.path))
    dataset, ops, options = nncf_inputs(cfg, model, artifact, ctx, WEIGHTED)
    quantized = run_nncf(cfg, model, dataset, ops, options, ctx)
    out = ctx.workdir / "model.xml"
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    meta = openvino_meta(cfg, quantized, options["subset_size"])
    if kept_float(artifact):
        meta["float_ops"] = float_op_counts(out, kept_float(artifact))
    elif cfg.model_type == "cnn" and (gates := gating_multiplies(ops)):
        meta["float_ops"] = {"Multiply": len(gates)}  # sigmoid gates, kept in float by design
    ctx.log(f"{cfg.name}: NNCF quantized {meta['quantized_layers']} layers; {len(meta['float_layers'])} left in float")
    if cfg.max_accuracy_drop is not None:
        meta["accuracy_control"] = control_summary(cfg, model, quantized, meta, ctx)
    return Artifact(
        Kind.OPENVINO, out.name, lineage=[*artifact.lineage, cfg.name], meta={**inherited(artifact), **meta}
    )


def nncf_inputs(cfg: QuantizeStage, model, artifact: Artifact, ctx: StageContext, weighted: tuple[str, ...]):
    """(calibration dataset, the model's ops, options) for NNCF's quantize; `weighted`: the op
    types a graph that keeps the rest in float (a detector's) quantizes."""
    import nncf

    calibration = ctx.splits.calibration(cfg.calibration.samples, ctx.seed)
    dataset = nncf.Dataset([ctx.task.feeds(calibration[i : i + 1]) for i in range(len(calibration))])
    ops = graph_ops(model)
    options = nncf_options(cfg, ops, len(calibration))
    if kept_float(artifact):
        options["ignored_scope"] = weighted_only(ops, options.get("ignored_scope"), weighted)
    return dataset, ops, options


def nncf_options(cfg: QuantizeStage, ops: list[Op], samples: int) -> dict:
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet as Ranges

    ranges = {"minmax": Ranges.MINMAX, "mean_minmax": Ranges.MEAN_MINMAX, "percentile": Ranges.MEAN_QUANTILE}
    advanced = AdvancedQuantizationParameters(
        disable_bias_correction=cfg.bias_correction is False,
        activations_range_estimator_params=ranges[cfg.calibration.method],
        weights_quantization_params=None if cfg.per_channel else QuantizationParameters(per_channel=False),
    )
    options = {"subset_size": samples, "fast_bias_correction": True, "advanced_parameters": advanced,
               "target_device": nncf.TargetDevice.CPU}  # fmt: skip
    if cfg.preset:
        options["preset"] = {"symmetric": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}[
            cfg.preset
        ]
    if cfg.model_type == "transformer":
        options["model_type"] = nncf.ModelType.TRANSFORMER
    if cfg.ignore:
        options["ignored_scope"] = ignored_scope(ops, cfg.ignore)
    if cfg.model_type == "cnn" and (gates := gating_multiplies(ops)):
        names = options["ignored_scope"].names if "ignored_scope" in options else []
        options["ignored_scope"] = nncf.IgnoredScope(names=[*names, *gates], validate=False)
    return options


GATES = ("Sigmoid", "HSigmoid", "HardSigmoid")

Op = tuple[str, str, tuple[str, ...]]  # name, type, the types of the ops feeding it


def graph_ops(model) -> list[Op]:
    """The ops of an OpenVINO model or an ONNX graph, in order, for the scope rules below."""
    if hasattr(model, "get_ordered_ops"):
        return [(op.get_friendly_name(), op.get_type_name(), tuple(v.get_node().get_type_name() for v in op.input_values()))
                for op in model.get_ordered_ops()]  # fmt: skip
    producers = {out: node.op_type for node in model.graph.node for out in node.output}
    return [(n.name, n.op_type, tuple(producers[i] for i in n.input if i in producers)) for n in model.graph.node]


def gating_multiplies(ops: list[Op]) -> list[str]:
    """Multiplies by a sigmoid gate: SiLU/Swish (x * sigmoid(x)) and squeeze-and-excitation scales.

    NNCF puts a FakeQuantize on both inputs of such a Multiply; the CPU plugin then cannot fuse the
    activation into the convolution before it, and the gate runs as separate dequantize-multiply
    steps. Left in float, the FakeQuantize moves to the next convolution's input, every convolution
    still runs in INT8, and EfficientNet-B0 ran 1.3x faster than fp32 instead of 0.9x (OpenVINO,
    AVX2, 1 thread, 128x128)."""
    return [name for name, kind, inputs in ops if kind in ("Multiply", "Mul") and any(t in GATES for t in inputs)]


# How numpy words its floating-point failures (RuntimeWarning), e.g. "overflow encountered in multiply".
NUMPY_FAILURES = ("overflow encountered", "invalid value encountered", "divide by zero encountered")


def run_nncf(cfg: QuantizeStage, model, dataset, ops: list[Op], options: dict, ctx: StageContext):
    """NNCF's quantized model (an OpenVINO model or an ONNX graph, as given); its failures as
    StageErrors that name the remedy."""
    try:
        # NNCF logs every node it leaves alone at INFO to stdout; keep warnings only.
        with logger_level(logging.getLogger("nncf"), logging.WARNING), warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always", RuntimeWarning)
            quantized = _quantize(cfg, model, dataset, options, ctx)
    except (RuntimeError, ValueError) as exc:  # NNCF's own errors derive from these
        raise nncf_error(exc, ops, cfg) from None
    failed = [w for w in seen if issubclass(w.category, RuntimeWarning) and str(w.message).startswith(NUMPY_FAILURES)]
    for w in seen:
        if w not in failed:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    arithmetic = sorted({str(w.message) for w in failed})
    if arithmetic:  # numpy's overflow / invalid-cast warnings inside NNCF: some scales are not finite
        hint = " (model_type: transformer is NNCF's scheme for Transformers)" if cfg.model_type == "cnn" else ""
        ctx.log(f"warning: {cfg.name}: NNCF's arithmetic failed while computing quantization parameters "
                f"({'; '.join(arithmetic)}); this INT8 model may be broken{hint}")  # fmt: skip
    return quantized


def _quantize(cfg: QuantizeStage, model, dataset, options: dict, ctx: StageContext):
    import nncf

    if cfg.max_accuracy_drop is None:
        return nncf.quantize(model, dataset, **options)
    return nncf.quantize_with_accuracy_control(
        model, dataset, validation_dataset(ctx), validation_fn(ctx), max_drop=drop(cfg),
        drop_type=nncf.DropType.ABSOLUTE if cfg.drop_type == "absolute" else nncf.DropType.RELATIVE,
        **{k: v for k, v in options.items() if k != "advanced_parameters"},
        advanced_quantization_parameters=options.get("advanced_parameters"),
    )  # fmt: skip


def nncf_error(exc: Exception, ops: list[Op], cfg: QuantizeStage) -> StageError:
    """NNCF's failure as a message naming the remedy; data-dependent branches are the usual cause."""
    branches = sum(1 for _, kind, _ in ops if kind == "If")
    if branches or "Could not find a node" in str(exc):
        return StageError(f"NNCF cannot quantize this graph ({first_line(exc)}); it has {branches} data-dependent "
                          "branch(es) (If nodes), which NNCF's graph does not follow",
                          hint=f"use `backend: onnxruntime` in stage '{cfg.name}', or export without the "
                          "branches (compress's detectors do; for your own model, avoid data-dependent `if`s)")  # fmt: skip
    return StageError(f"NNCF quantization failed: {first_line(exc)}", hint=f"check 'ignore' in stage '{cfg.name}'")


def weighted_only(ops: list[Op], scope, weighted: tuple[str, ...]):
    """An IgnoredScope leaving every op type but the `weighted` ones (convolutions, MatMuls)
    unquantized (detectors: the box arithmetic after the heads stays exact), merged with the user's
    names."""
    import nncf

    types = sorted({kind for _, kind, _ in ops} - set(weighted))
    return nncf.IgnoredScope(names=list(scope.names) if scope else [], types=types, validate=False)


def ignored_scope(ops: list[Op], patterns: list[str]):
    """Our selection grammar (names, op types, re:) as an NNCF IgnoredScope."""
    import nncf

    names = [name for name, kind, _ in ops if matches(name, kind, patterns)]
    if not names:
        raise StageError(f"ignore patterns {patterns} match no layer",
                         hint=f"layer names look like {ops[min(3, len(ops) - 1)][0]!r}")  # fmt: skip
    return nncf.IgnoredScope(names=names, validate=False)


class ValidationBatches:
    """(inputs, labels) batches of the validation split, read as NNCF iterates (it may do so often)."""

    def __init__(self, x, y, size: int = 64) -> None:
        self.x, self.y, self.size = x, y, size

    def __iter__(self):
        return ((self.x[i : i + self.size], self.y[i : i + self.size]) for i in range(0, len(self.x), self.size))

    def __len__(self) -> int:
        return -(-len(self.x) // self.size)


def validation_items(ctx: StageContext) -> ValidationBatches:
    return ValidationBatches(ctx.splits.x_val, ctx.splits.y_val)


def validation_dataset(ctx: StageContext):
    import nncf

    return nncf.Dataset(validation_items(ctx))


def control_summary(cfg: QuantizeStage, original, quantized, meta: dict, ctx: StageContext) -> dict:
    """What NNCF's accuracy control reached, in the form the ONNX Runtime search reports. A model with
    every layer back in float does not meet the budget: it is no longer INT8."""
    import openvino as ov

    from compress.stages.quantize.accuracy_control import allowed_drop, summary

    def accuracy(model) -> float:
        compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return validation_fn(ctx)(compiled, validation_items(ctx))

    fp32_acc, acc = accuracy(original), accuracy(quantized)
    budget = allowed_drop(cfg, fp32_acc)
    met = meta["quantized_layers"] > 0 and fp32_acc - acc <= budget
    if not met:
        ctx.log(f"warning: {cfg.name}: NNCF did not meet the {budget:.2f}-point budget with INT8 layers "
                f"({meta['quantized_layers']} quantized, {acc:.2f}% on val against {fp32_acc:.2f}%)")  # fmt: skip
    return summary(
        fp32_acc,
        budget,
        [{"float_layer": None, "val_accuracy": round(acc, 3), "label": "NNCF's result"}],
        meta["float_layers"],
        met,
        val_examples=len(ctx.splits.y_val),
    )


def validation_fn(ctx: StageContext):
    def validate(compiled, items) -> float:
        outputs, labels = [], []
        for x, y in items:
            outputs.append(compiled(ctx.task.feeds(x))[compiled.output(0)])
            labels.append(y)
        return ctx.task.score(np.concatenate(outputs), np.concatenate(labels))

    return validate


def drop(cfg: QuantizeStage) -> float:
    """NNCF's units: metric points when absolute (ours are percent points), a fraction when relative."""
    return cfg.max_accuracy_drop if cfg.drop_type == "absolute" else cfg.max_accuracy_drop / 100


def openvino_meta(cfg: QuantizeStage, model, samples: int) -> dict:
    ops = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    weighted = [op for op in ops.values() if op.get_type_name() in WEIGHTED]
    quantized = [op for op in weighted if _fed_by_fake_quantize(op)]
    return Quantization(
        precision="int8", format="openvino-ir", method="ptq", backend="openvino",
        preset=cfg.preset or "default", model_type=cfg.model_type, per_channel=cfg.per_channel,
        bias_correction=cfg.bias_correction is not False, for_targets=cfg.for_ or None,
        calibration=Calibration(method=cfg.calibration.method, samples=samples),
        quantized_layers=len(quantized),
        float_layers=[op.get_friendly_name() for op in weighted if op not in quantized],
        **({"max_accuracy_drop": cfg.max_accuracy_drop, "drop_type": cfg.drop_type} if cfg.max_accuracy_drop else {}),
    ).dump()  # fmt: skip


# Ops that pass INT8 through unchanged: NNCF puts the FakeQuantize before them (a MaxPool after the
# stem, a Reshape before a MatMul), so the layer after them still gets INT8 activations.
QUANTIZATION_AGNOSTIC = {"Convert", "MaxPool", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Pad", "StridedSlice",
                         "Split", "VariadicSplit", "DepthToSpace", "SpaceToDepth"}  # fmt: skip


def _fed_by_fake_quantize(op) -> bool:
    """True when the layer's activation input comes, through ops that keep INT8 as it is, from a FakeQuantize."""
    source = op.input_value(0).get_node()
    while source.get_type_name() in QUANTIZATION_AGNOSTIC:
        source = source.input_value(0).get_node()
    return source.get_type_name() == "FakeQuantize"
