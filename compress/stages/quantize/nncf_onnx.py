"""`quantize` with `backend: nncf`: NNCF's post-training quantization applied to the ONNX graph,
written as a QDQ ONNX file that ONNX Runtime runs on its U8S8 integer kernels.

NNCF brings what ONNX Runtime's own quantizers lack for Transformers: SmoothQuant (activation
outliers moved into the weights), Transformer-aware placement (`model_type: transformer`) and bias
correction. On all-MiniLM-L6-v2 its file kept cosine 99.76 to fp32 in ONNX Runtime, where dynamic
quantization kept 99.28 and ONNX Runtime's static QDQ of the weighted MatMuls about 93.5.

NNCF writes signed 8-bit activations. ONNX Runtime's x86 kernels fuse only some S8S8 MatMuls into
integer ones (24 of MiniLM's 42 quantized MatMuls stayed float, behind a DequantizeLinear: 1.02x
faster than fp32); the same values as unsigned 8-bit (zero point + 128, same scale) are exact and
take the U8S8 path everywhere.

NNCF also stores embedding tables in 8 bits, one scale per row, dequantized whole before the
Gather that reads them: ONNX Runtime did that on every call (30,522 x 384 values for MiniLM; a
pruned student ran 11.6 ms instead of 9.2). Gathering the INT8 rows first and dequantizing only
those computes the same values.

ONNX Runtime fuses a Q/DQ Gemm (a Linear layer on 2-D inputs: a classifier head, a detector's box
head) into its integer QGemm only when every input, the bias too, is dequantized; NNCF leaves the
bias in float, so such layers ran in float. Adding the bias after the Gemm is the same sum.
"""

from __future__ import annotations

import numpy as np

from compress.artifact import Artifact, Kind
from compress.report.details import Calibration, Quantization
from compress.stages import StageContext
from compress.stages.quantize import QuantizeStage
from compress.stages.quantize.common import WEIGHTED_OPS, count_quantized_ops, graph_readers, inherited
from compress.stages.quantize.openvino import nncf_inputs, run_nncf


def run_nncf_onnx(cfg: QuantizeStage, artifact: Artifact, ctx: StageContext) -> Artifact:
    import onnx

    model = onnx.load(str(artifact.path))
    dataset, ops, options = nncf_inputs(cfg, model, artifact, ctx, WEIGHTED_OPS)
    quantized = run_nncf(cfg, model, dataset, ops, options, ctx)
    turned = unsigned_activations(quantized)
    gathered = rows_dequantized_after_gather(quantized)
    gemms = gemm_biases_apart(quantized)
    out = ctx.workdir / "model.onnx"
    onnx.save(quantized, str(out))
    meta = Quantization(
        precision="int8", format="onnx-qdq", method="ptq", backend="nncf", activations="uint8", weights="int8",
        per_channel=cfg.per_channel, preset=cfg.preset or "default", model_type=cfg.model_type,
        bias_correction=cfg.bias_correction is not False, for_targets=cfg.for_ or None,
        calibration=Calibration(method=cfg.calibration.method, samples=options["subset_size"]),
        quantized_ops=count_quantized_ops(out),
    ).dump()  # fmt: skip
    tables = f", {gathered} token table(s) read as INT8 rows" if gathered else ""
    tables += f", {gemms} Gemm bias(es) added apart" if gemms else ""
    ctx.log(f"{cfg.name}: NNCF quantized {meta['quantized_ops']} ops (ONNX, {turned} activation quantizers as "
            f"uint8{tables})")  # fmt: skip
    return Artifact(Kind.ONNX, out.name, lineage=[*artifact.lineage, cfg.name], meta={**inherited(artifact), **meta})


def unsigned_activations(model) -> int:
    """Rewrite each QuantizeLinear with a signed 8-bit zero point, and the DequantizeLinear nodes
    reading it, to unsigned 8-bit: q + 128 with zero point + 128 dequantizes to the same values.
    Weights (constant, DequantizeLinear only) stay signed. Returns how many were rewritten."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    constants = {i.name: i for i in graph.initializer}
    readers = graph_readers(graph)
    turned = set()
    for node in graph.node:
        zero = constants.get(node.input[2]) if node.op_type == "QuantizeLinear" and len(node.input) > 2 else None
        if zero is None or zero.data_type != onnx.TensorProto.INT8:
            continue
        shifted = (numpy_helper.to_array(zero).astype(np.int16) + 128).astype(np.uint8)
        name = f"{node.output[0]}_zero_point_u8"
        graph.initializer.append(numpy_helper.from_array(shifted, name))
        node.input[2] = name
        for reader in readers.get(node.output[0], []):
            if reader.op_type == "DequantizeLinear":
                reader.input[2] = name
        turned.add(node.output[0])
    for info in graph.value_info:  # recorded types of the rewritten outputs
        if info.name in turned:
            info.type.tensor_type.elem_type = onnx.TensorProto.UINT8
    used = {name for node in graph.node for name in node.input}
    kept = [i for i in graph.initializer if i.name in used or i.name not in constants]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return len(turned)


def rows_dequantized_after_gather(model) -> int:
    """Rewrite Gather(DequantizeLinear(table, scale, zero point), ids) on a constant table with one
    scale per row (axis 0) to dequantize only the rows read: (Gather(table) - Gather(zero point)) *
    Gather(scale), the same float arithmetic. Returns how many tables were rewritten."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    constants = {i.name: i for i in graph.initializer}
    readers = graph_readers(graph)
    replaced: dict[int, list] = {}  # id(node) -> nodes in its place
    tables = 0
    for node in graph.node:
        if not _row_dequantized_table(node, constants):
            continue
        users = readers.get(node.output[0], [])
        if not users or not all(_row_gather(u, node.output[0]) for u in users):
            continue
        replaced[id(node)], tables = [], tables + 1
        for k, gather in enumerate(users):
            replaced[id(gather)] = _gather_rows(node, gather, f"{node.output[0]}/rows{k}", helper, onnx)
    if not tables:
        return 0
    axis = numpy_helper.from_array(np.array([-1], np.int64), "rows_dequantized/last_axis")
    graph.initializer.append(axis)
    _replace_nodes(graph, replaced)
    return tables


def gemm_biases_apart(model) -> int:
    """Rewrite each Gemm(DequantizeLinear(a), DequantizeLinear(b), float bias) with beta 1 as
    Add(Gemm(a, b), bias), which ONNX Runtime runs on its integer QGemm. Returns how many."""
    from onnx import helper

    graph = model.graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    replaced: dict[int, list] = {}
    for node in graph.node:
        beta = next((a.f for a in node.attribute if a.name == "beta"), 1.0)
        if (node.op_type != "Gemm" or len(node.input) < 3 or not node.input[2] or beta != 1.0
                or not {node.input[0], node.input[1]} <= dequantized or node.input[2] in dequantized):  # fmt: skip
            continue
        result, bias = node.output[0], node.input[2]
        node.output[0] = f"{result}/without_bias"
        del node.input[2]
        add = helper.make_node("Add", [node.output[0], bias], [result], name=f"{node.name}/bias")
        replaced[id(node)] = [node, add]
    _replace_nodes(graph, replaced)
    return len(replaced)


def _replace_nodes(graph, replaced: dict[int, list]) -> None:
    """Put each node whose id is in `replaced` by the nodes given for it, in the graph's order."""
    nodes = [new for n in graph.node for new in replaced.get(id(n), [n])]
    del graph.node[:]
    graph.node.extend(nodes)


def _row_dequantized_table(node, constants: dict) -> bool:
    """A DequantizeLinear of a constant table with a float32 scale and a zero point per row."""
    import onnx

    if node.op_type != "DequantizeLinear" or len(node.input) < 3 or _axis(node, 1) != 0:
        return False
    table, scale, zero = (constants.get(name) for name in node.input[:3])
    return (table is not None and scale is not None and zero is not None and len(scale.dims) == 1
            and len(zero.dims) == 1 and scale.data_type == onnx.TensorProto.FLOAT)  # fmt: skip


def _axis(node, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), default)


def _row_gather(node, table: str) -> bool:
    return node.op_type == "Gather" and node.input[0] == table and _axis(node, 0) == 0


def _gather_rows(dequantize, gather, prefix: str, helper, onnx) -> list:
    table, scale, zero = dequantize.input[:3]
    ids, result, axis = gather.input[1], gather.output[0], "rows_dequantized/last_axis"
    f32 = onnx.TensorProto.FLOAT
    return [
        helper.make_node("Gather", [table, ids], [prefix + "/q"], name=prefix + "/table", axis=0),
        helper.make_node("Cast", [prefix + "/q"], [prefix + "/qf"], to=f32),
        helper.make_node("Gather", [zero, ids], [prefix + "/z"], axis=0),
        helper.make_node("Cast", [prefix + "/z"], [prefix + "/zf"], to=f32),
        helper.make_node("Unsqueeze", [prefix + "/zf", axis], [prefix + "/zu"]),
        helper.make_node("Gather", [scale, ids], [prefix + "/s"], axis=0),
        helper.make_node("Unsqueeze", [prefix + "/s", axis], [prefix + "/su"]),
        helper.make_node("Sub", [prefix + "/qf", prefix + "/zu"], [prefix + "/d"]),
        helper.make_node("Mul", [prefix + "/d", prefix + "/su"], [result]),
    ]
