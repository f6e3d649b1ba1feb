"""ONNX Runtime quantization for `quantize`: static QDQ (PTQ) and dynamic.

The static path follows ONNX Runtime's static quantization: graph pre-processing (shape inference,
folding), calibration of activation ranges on a training subset, then QuantizeLinear /
DequantizeLinear pairs that the runtime fuses into integer kernels. Unsigned activations with
signed weights (U8S8) is the default: on x86 CPUs with VNNI it is the fast path. On CPUs without
VNNI, U8S8 kernels can saturate, so weights get 7 bits (reduce_range) unless the recipe says.
With `max_accuracy_drop`, layers go back to floating point in order of measured sensitivity
until the validation accuracy is within budget (see accuracy_control.py).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from compress.artifact import Artifact, Kind
from compress.errors import StageError, first_line
from compress.measure.environment import cpu_info
from compress.report.details import Calibration, Quantization
from compress.selection import matches
from compress.stages import StageContext
from compress.stages.quantize import QuantizeStage
from compress.stages.quantize.common import (
    WEIGHTED_OPS,
    calibration_batches,
    calibration_step,
    count_quantized_ops,
    float_op_counts,
    inherited,
    kept_float,
    logger_level,
)

VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def run_onnxruntime(cfg: QuantizeStage, artifact: Artifact, ctx: StageContext) -> Artifact:
    source = preprocess(artifact.path, ctx)
    reduce_range, reason = choose_reduce_range(cfg, cpu_info()["isa"])
    if reason:
        ctx.log(f"{cfg.name}: {reason}")
    base_excluded = excluded_nodes(source, cfg.ignore, ctx)
    calibration = ctx.splits.calibration(cfg.calibration.samples, ctx.seed)
    out = ctx.workdir / "model.onnx"
    graph = {"step": calibration_step(artifact), "op_types": list(WEIGHTED_OPS) if kept_float(artifact) else None}

    def quantize(excluded: list[str], path: Path = out) -> Path:
        quantize_ort(cfg, source, path, calibration, excluded, reduce_range, ctx, **graph)
        return path

    control = None
    if cfg.max_accuracy_drop is None:
        quantize(base_excluded)
    else:
        from compress.stages.quantize.accuracy_control import control_accuracy

        control = control_accuracy(cfg, artifact.path, source, base_excluded, quantize, out, ctx)
    if source != artifact.path:
        source.unlink(missing_ok=True)
    excluded = control["float_nodes"] if control else base_excluded
    meta = ort_meta(cfg, out, excluded, len(calibration), reduce_range, reason)
    if kept_float(artifact):
        meta["float_ops"] = float_op_counts(out, kept_float(artifact))
    if control:
        from compress.stages.quantize.fallback import run_fallback

        meta = run_fallback(cfg, control, out, {**meta, "accuracy_control": control}, ctx)
    ctx.log(f"{cfg.name}: {meta['quantized_ops']} ops quantized ({cfg.activations} activations, {cfg.weights} weights)")
    return Artifact(Kind.ONNX, out.name, lineage=[*artifact.lineage, cfg.name], meta={**inherited(artifact), **meta})


def run_dynamic(cfg: QuantizeStage, artifact: Artifact, ctx: StageContext) -> Artifact:
    """ONNX Runtime dynamic quantization: INT8 weights, activation ranges computed per call.

    The usual choice for MatMul-heavy Transformer graphs on CPUs: integer MatMuls without fixed
    activation scales, and no quantize/dequantize pairs around Softmax, LayerNorm or GELU.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = preprocess(artifact.path, ctx)
    excluded = excluded_nodes(source, cfg.ignore, ctx)
    out = ctx.workdir / "model.onnx"
    weight = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[cfg.weights]
    try:
        with logger_level(logging.getLogger(), logging.ERROR):
            quantize_dynamic(source, out, weight_type=weight, per_channel=cfg.per_channel,
                             reduce_range=bool(cfg.reduce_range), nodes_to_exclude=excluded)  # fmt: skip
    except Exception as exc:  # the quantizer raises bare exceptions; keep the first line for the user
        raise StageError(
            f"ONNX Runtime dynamic quantization failed: {first_line(exc)}", hint=f"check 'ignore' in stage '{cfg.name}'"
        ) from None
    if source != artifact.path:
        source.unlink(missing_ok=True)
    meta = Quantization(precision="int8", format="onnx-dynamic", method="dynamic", backend="onnxruntime",
                        weights=cfg.weights, activations="dynamic uint8", per_channel=cfg.per_channel, for_targets=cfg.for_ or None,
                        quantized_ops=count_dynamic_ops(out), float_nodes=excluded).dump()  # fmt: skip
    ctx.log(f"{cfg.name}: {meta['quantized_ops']} ops quantized dynamically (int8 weights)")
    return Artifact(Kind.ONNX, out.name, lineage=[*artifact.lineage, cfg.name], meta={**inherited(artifact), **meta})


def count_dynamic_ops(path: Path) -> int:
    import onnx

    integer = ("MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "QAttention", "DynamicQuantizeLinear")
    return sum(1 for n in onnx.load(str(path)).graph.node if n.op_type in integer[:-1])


def choose_reduce_range(cfg: QuantizeStage, isa: list[str]) -> tuple[bool, str | None]:
    """ONNX Runtime's documented remedy for U8S8 saturation on CPUs without VNNI: 7-bit weights."""
    if cfg.reduce_range is not None:
        return cfg.reduce_range, None
    u8s8 = cfg.activations == "uint8" and cfg.weights == "int8"
    if u8s8 and isa and not any(flag in isa for flag in VNNI_FLAGS):
        return True, "this CPU has no VNNI: U8S8 kernels can saturate, so weights use 7 bits (reduce_range)"
    return False, None


def quantize_ort(cfg, source: Path, out: Path, calibration: np.ndarray, excluded, reduce_range, ctx, step: int = 32,
                 op_types: list[str] | None = None) -> None:  # fmt: skip
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}  # fmt: skip
    if cfg.calibration.method not in methods:
        raise StageError(f"calibration method '{cfg.calibration.method}' is not available in ONNX Runtime",
                         hint="use minmax, entropy or percentile")  # fmt: skip
    extra = {}
    if op_types:
        extra["op_types_to_quantize"] = op_types
    if "calibration_cache_path" in inspect.signature(quantize_static).parameters:
        extra["calibration_cache_path"] = ctx.workdir / "calibration.json"  # calibrate once, requantize fast
    try:
        with logger_level(
            logging.getLogger(), logging.ERROR
        ):  # the quantizer logs a warning per 1-D weight through the root logger
            quantize_static(
                source, out, _reader(ctx.task, calibration, step),
            quant_format=QuantFormat.QDQ, per_channel=cfg.per_channel, reduce_range=reduce_range,
            activation_type=types[cfg.activations], weight_type=types[cfg.weights],
            calibrate_method=methods[cfg.calibration.method], nodes_to_exclude=list(excluded),
                extra_options={"CalibPercentile": cfg.calibration.percentile, **symmetry(cfg)}, **extra,
            )  # fmt: skip
    except Exception as exc:  # the quantizer raises bare exceptions; keep the first line for the user
        raise StageError(f"ONNX Runtime quantization failed: {first_line(exc)}",
                         hint=f"try another calibration method or add the failing node to 'ignore' in stage '{cfg.name}'") from None  # fmt: skip


def symmetry(cfg: QuantizeStage) -> dict:
    """Zero-point-0 activations when asked (TensorRT's format); weights are symmetric either way."""
    return {"ActivationSymmetric": cfg.symmetric, "WeightSymmetric": cfg.weights == "int8"}


@contextlib.contextmanager
def working_directory(folder: Path):
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def preprocess(path: Path, ctx: StageContext) -> Path:
    """ORT's recommended pre-processing; symbolic shape inference fails on some graphs, so retry without."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = (ctx.workdir / "preprocessed.onnx").resolve()
    path = path.resolve()  # before changing directory below
    reason = ""
    for skip_symbolic in (False, True):
        try:
            # When symbolic inference fails, ORT saves a debug copy of the model (with external
            # data files) into the working directory: keep that out of the user's folder.
            with tempfile.TemporaryDirectory(dir=ctx.workdir) as scratch, working_directory(Path(scratch)):
                quant_pre_process(str(path), str(out), skip_symbolic_shape=skip_symbolic)
            return out
        except Exception as exc:  # noqa: PERF203 - one retry, then carry on without
            reason = first_line(exc)
    ctx.log(f"warning: quantization pre-processing failed ({reason}); quantizing the exported graph as is")
    return path


def excluded_nodes(path: Path, patterns: list[str], ctx: StageContext) -> list[str]:
    import onnx

    if not patterns:
        return []
    nodes = onnx.load(str(path), load_external_data=False).graph.node
    names = [n.name for n in nodes if matches(n.name, n.op_type, patterns)]
    unused = [p for p in patterns if not any(matches(n.name, n.op_type, [p]) for n in nodes)]
    if unused:
        ctx.log(f"warning: ignore pattern(s) {unused} match no node; node names look like {nodes[0].name!r}")
    return names


def ort_meta(cfg: QuantizeStage, path: Path, excluded: list[str], samples: int, reduce_range: bool, reason) -> dict:
    return Quantization(
        precision="int8", format="onnx-qdq", method="ptq", backend="onnxruntime",
        activations=cfg.activations, weights=cfg.weights, per_channel=cfg.per_channel,
        symmetric=cfg.symmetric, for_targets=cfg.for_ or None, reduce_range=reduce_range, **({"reduce_range_reason": reason} if reason else {}),
        calibration=Calibration(method=cfg.calibration.method, samples=samples),
        quantized_ops=count_quantized_ops(path), float_nodes=excluded,
    ).dump()  # fmt: skip


def _reader(task, data: np.ndarray, step: int):
    """A calibration data reader that feeds `data` in batches of `step`, once."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([task.feeds(b) for b in calibration_batches(data, step)])

        def get_next(self):
            return next(self._batches, None)

    return Reader()
