"""`quantize` with `backend: modelopt`: NVIDIA's ONNX post-training quantization (the
`nvidia-modelopt` package), which places Q/DQ nodes by TensorRT's own rules with symmetric INT8
(zero point 0) and per-channel weights: the format TensorRT's explicit quantization runs. Its
calibration runs in ONNX Runtime on the CPU here; the float parts of the graph stay fp32 (the
target's `precision` decides what TensorRT computes them in).
"""

from __future__ import annotations

import logging

from compress.artifact import Artifact, Kind
from compress.errors import StageError, first_line
from compress.report.details import Calibration, Quantization
from compress.stages import StageContext
from compress.stages.quantize import QuantizeStage
from compress.stages.quantize.common import count_quantized_ops, inherited, logger_level
from compress.stages.quantize.onnxruntime import excluded_nodes

METHODS = {"minmax": "max", "entropy": "entropy"}  # compress's calibration names -> modelopt's


def run_modelopt(cfg: QuantizeStage, artifact: Artifact, ctx: StageContext) -> Artifact:
    from modelopt.onnx.quantization import quantize

    calibration = ctx.splits.calibration(cfg.calibration.samples, ctx.seed)
    out = ctx.workdir / "model.onnx"
    try:
        with logger_level(logging.getLogger(), logging.ERROR):
            quantize(str(artifact.path), quantize_mode="int8", calibration_data=ctx.task.feeds(calibration),
                     calibration_method=METHODS[cfg.calibration.method], calibration_eps=["cpu"],
                     nodes_to_exclude=excluded_nodes(artifact.path, cfg.ignore, ctx) or None,
                     high_precision_dtype="fp32", output_path=str(out), log_level="ERROR")  # fmt: skip
    except Exception as exc:  # the library raises many types; the user needs the first line
        raise StageError(f"modelopt quantization failed: {first_line(exc)}",
                         hint=f"add the failing node to 'ignore' in stage '{cfg.name}', or use backend: onnxruntime") from None  # fmt: skip
    if not out.is_file():
        raise StageError("modelopt quantization wrote no model", hint="use backend: onnxruntime with for: [TARGET]")
    meta = Quantization(precision="int8", format="onnx-qdq", method="ptq", backend="modelopt", activations="int8",
                        weights="int8", per_channel=True, symmetric=True, for_targets=cfg.for_ or None,
                        calibration=Calibration(method=cfg.calibration.method, samples=len(calibration)),
                        quantized_ops=count_quantized_ops(out)).dump()  # fmt: skip
    ctx.log(f"{cfg.name}: modelopt quantized {meta['quantized_ops']} ops (symmetric INT8, TensorRT's placement)")
    return Artifact(Kind.ONNX, out.name, lineage=[*artifact.lineage, cfg.name], meta={**inherited(artifact), **meta})
