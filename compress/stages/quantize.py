"""`quantize` (method: ptq, backend: onnxruntime): static INT8 quantization in QDQ format.

Follows ONNX Runtime's static quantization: graph pre-processing (shape inference, folding),
calibration of activation ranges on a training subset, then QuantizeLinear/DequantizeLinear pairs
that the runtime fuses into integer kernels. Unsigned activations with signed weights (U8S8) is
the default: on x86 CPUs with VNNI it is the fast path.
"""

from __future__ import annotations

import numpy as np

from compress.artifact import Artifact
from compress.errors import StageError
from compress.recipe import QuantizeStage
from compress.selection import matches
from compress.stages import StageContext

CALIBRATION_BATCH = 32


def run(cfg: QuantizeStage, artifact: Artifact, ctx: StageContext) -> Artifact:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    source = preprocess(artifact.path, ctx)
    excluded = excluded_nodes(source, cfg.ignore, ctx)
    calibration = ctx.splits.calibration(cfg.calibration.samples, ctx.seed)
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}  # fmt: skip
    out = ctx.workdir / "model.onnx"
    try:
        quantize_static(
            source, out, _reader(ctx.task.input_names[0], calibration),
            quant_format=QuantFormat.QDQ, per_channel=cfg.per_channel, reduce_range=cfg.reduce_range,
            activation_type=types[cfg.activations], weight_type=types[cfg.weights],
            calibrate_method=methods[cfg.calibration.method], nodes_to_exclude=excluded,
            extra_options={"CalibPercentile": cfg.calibration.percentile},
        )  # fmt: skip
    except Exception as exc:  # the quantizer raises bare exceptions; keep the first line for the user
        raise StageError(f"ONNX Runtime quantization failed: {str(exc).splitlines()[0] if str(exc) else exc!r}",
                         hint=f"try another calibration method or add the failing node to 'ignore' in stage '{cfg.name}'") from None  # fmt: skip
    finally:
        if source != artifact.path:
            source.unlink(missing_ok=True)
    meta = quantization_meta(cfg, out, excluded, len(calibration))
    ctx.log(
        f"{cfg.name}: {meta['quantized_ops']} ops quantized ({meta['activations']} activations, {meta['weights']} weights)"
    )
    base = {k: v for k, v in artifact.meta.items() if k not in ("precision", "export_max_abs_diff")}
    return Artifact("onnx", out.name, lineage=[*artifact.lineage, cfg.name], meta={**base, **meta})


def preprocess(path, ctx: StageContext):
    """ORT's recommended pre-processing; symbolic shape inference fails on some graphs, so retry without."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = ctx.workdir / "preprocessed.onnx"
    for skip_symbolic in (False, True):
        try:
            quant_pre_process(str(path), str(out), skip_symbolic_shape=skip_symbolic)
            return out
        except Exception as exc:  # noqa: PERF203 - one retry, then carry on without
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    ctx.log(f"warning: quantization pre-processing failed ({reason}); quantizing the exported graph as is")
    return path


def excluded_nodes(path, patterns: list[str], ctx: StageContext) -> list[str]:
    import onnx

    if not patterns:
        return []
    nodes = onnx.load(str(path), load_external_data=False).graph.node
    names = [n.name for n in nodes if matches(n.name, n.op_type, patterns)]
    unused = [p for p in patterns if not any(matches(n.name, n.op_type, [p]) for n in nodes)]
    if unused:
        ctx.log(f"warning: ignore pattern(s) {unused} match no node; node names look like {nodes[0].name!r}")
    return names


def quantization_meta(cfg: QuantizeStage, path, excluded: list[str], samples: int) -> dict:
    import onnx

    graph = onnx.load(str(path)).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    quantized = [n for n in graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
                 and any(i in dequantized for i in n.input)]  # fmt: skip
    return {
        "precision": "int8", "format": "onnx-qdq", "method": "ptq", "backend": "onnxruntime",
        "activations": cfg.activations, "weights": cfg.weights, "per_channel": cfg.per_channel,
        "reduce_range": cfg.reduce_range, "calibration": {"method": cfg.calibration.method, "samples": samples},
        "quantized_ops": len(quantized), "float_nodes": excluded,
    }  # fmt: skip


def _reader(input_name: str, data: np.ndarray):
    """A calibration data reader that feeds `data` in batches, once."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            step = CALIBRATION_BATCH
            self._batches = iter([{input_name: data[i : i + step]} for i in range(0, len(data), step)])

        def get_next(self):
            return next(self._batches, None)

    return Reader()
