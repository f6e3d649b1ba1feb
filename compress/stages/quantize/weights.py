"""`quantize` with `method: int4`: weight-only compression of a Transformer's MatMul weights to 4
bits in groups along the input dimension, activations left in floating point.

ONNX Runtime: its MatMulNBits quantizer (the weights packed into MatMulNBits nodes, computed with
INT8 activations on CPUs, accuracy level 4). OpenVINO: NNCF's `compress_weights` (INT4 with
INT8 for the layers NNCF keeps at 8 bits, such as embeddings, to an IR).
"""

from __future__ import annotations

import logging

from compress.artifact import Artifact, Kind
from compress.errors import StageError, first_line
from compress.report.details import Quantization
from compress.stages import StageContext
from compress.stages.quantize import QuantizeStage
from compress.stages.quantize.common import inherited, logger_level
from compress.stages.quantize.onnxruntime import excluded_nodes

ACCURACY_LEVEL = 4  # MatMulNBits computes with INT8 activations: ONNX Runtime's fast CPU path
INT4_TYPES = ("u4", "i4")


def run_int4(cfg: QuantizeStage, artifact: Artifact, ctx: StageContext) -> Artifact:
    run = _openvino if cfg.backend == "openvino" else _onnxruntime
    try:
        with logger_level(logging.getLogger(), logging.ERROR), logger_level(logging.getLogger("nncf"), logging.ERROR):
            out, compressed = run(cfg, artifact, ctx)
    except (RuntimeError, ValueError, AssertionError) as exc:  # the libraries' own errors
        raise StageError(f"INT4 weight compression failed ({cfg.backend}): {first_line(exc)}",
                         hint=f"check 'ignore' and 'group_size' in stage '{cfg.name}'") from None  # fmt: skip
    if not compressed:
        raise StageError("INT4 weight compression found no MatMul weights to compress",
                         hint="method int4 is for Transformer (MatMul) weights; use method: ptq for convolutions")  # fmt: skip
    meta = Quantization(precision="int4", format=f"{'openvino-ir' if cfg.backend == 'openvino' else 'onnx'}-int4",
                        method="int4", backend=cfg.backend, weights="int4", activations="float",
                        per_channel=False, quantized_ops=compressed, for_targets=cfg.for_ or None).dump()  # fmt: skip
    meta["group_size"] = cfg.group_size
    ctx.log(f"{cfg.name}: {compressed} MatMul weights in 4 bits (groups of {cfg.group_size})")
    kind = Kind.OPENVINO if cfg.backend == "openvino" else Kind.ONNX
    return Artifact(kind, out.name, lineage=[*artifact.lineage, cfg.name], meta={**inherited(artifact), **meta})


def _onnxruntime(cfg: QuantizeStage, artifact: Artifact, ctx: StageContext):
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(onnx.load(str(artifact.path)), bits=4, block_size=cfg.group_size,
                                     is_symmetric=cfg.symmetric, accuracy_level=ACCURACY_LEVEL,
                                     nodes_to_exclude=excluded_nodes(artifact.path, cfg.ignore, ctx))  # fmt: skip
    quantizer.process()
    out = ctx.workdir / "model.onnx"
    quantizer.model.save_model_to_file(str(out), use_external_data_format=False)
    return out, sum(n.op_type == "MatMulNBits" for n in onnx.load(str(out), load_external_data=False).graph.node)


def _openvino(cfg: QuantizeStage, artifact: Artifact, ctx: StageContext):
    import nncf
    import openvino as ov

    from compress.stages.quantize.openvino import graph_ops, ignored_scope

    model = ov.Core().read_model(str(artifact.path))
    mode = nncf.CompressWeightsMode.INT4_SYM if cfg.symmetric else nncf.CompressWeightsMode.INT4_ASYM
    options = {"ignored_scope": ignored_scope(graph_ops(model), cfg.ignore)} if cfg.ignore else {}
    compressed = nncf.compress_weights(model, mode=mode, group_size=cfg.group_size, **options)
    out = ctx.workdir / "model.xml"
    ov.save_model(compressed, str(out), compress_to_fp16=False)
    count = sum(op.get_type_name() == "Constant" and op.get_element_type().get_type_name() in INT4_TYPES
                for op in compressed.get_ops())  # fmt: skip
    return out, count
