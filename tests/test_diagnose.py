"""The "will it be faster?" diagnosis blames only what the graph really shows."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compress.report.diagnose import likely_reasons


def weight(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.full(shape, 0.01, np.float32), name)


def efficientnet_like(path, stem_channels: int = 16) -> None:
    """Stem conv, a depthwise conv whose weight is a Constant node, a pointwise conv whose weight is
    reshaped from a flat tensor, and a squeeze-and-excitation pair (4 squeeze channels on 1x1)."""
    c = stem_channels
    nodes = [
        helper.make_node("Conv", ["x", "w_stem"], ["a"], pads=[1, 1, 1, 1], name="stem"),
        helper.make_node("Constant", [], ["w_dw"], value=weight("dw", (c, 1, 3, 3)), name="dw_weight"),
        helper.make_node("Conv", ["a", "w_dw"], ["b"], group=c, pads=[1, 1, 1, 1], name="depthwise"),
        helper.make_node("Reshape", ["w_pw_flat", "pw_shape"], ["w_pw"], name="pw_weight"),
        helper.make_node("Conv", ["b", "w_pw"], ["d"], name="pointwise"),
        helper.make_node("GlobalAveragePool", ["d"], ["pooled"], name="se_pool"),
        helper.make_node("Conv", ["pooled", "w_fc1"], ["s1"], name="se_fc1"),
        helper.make_node("Sigmoid", ["s1"], ["s2"], name="se_act"),
        helper.make_node("Conv", ["s2", "w_fc2"], ["s3"], name="se_fc2"),
        helper.make_node("Mul", ["d", "s3"], ["y"], name="se_scale"),
    ]
    inits = [
        weight("w_stem", (c, 3, 3, 3)),
        weight("w_pw_flat", (4, 8 * c)),  # first dimension 4, the conv's output is 8 channels
        numpy_helper.from_array(np.array([8, c, 1, 1], np.int64), "pw_shape"),
        weight("w_fc1", (4, 8, 1, 1)),
        weight("w_fc2", (8, 4, 1, 1)),
    ]
    save_graph(path, nodes, inits, [1, 3, 16, 16], [1, 8, 16, 16])


def save_graph(path, nodes: list, inits: list, x_shape: list[int], y_shape: list[int]) -> None:
    """A checked opset-17 model from input x to output y."""
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def test_channel_counts_are_read_from_the_weight_whatever_produces_it(tmp_path):
    path = tmp_path / "model.onnx"
    efficientnet_like(path)
    assert likely_reasons(path) == [], "every spatial conv has a multiple of 8 channels; SE convs run on 1x1"


def test_a_spatial_conv_with_odd_channels_is_still_blamed(tmp_path):
    path = tmp_path / "model.onnx"
    efficientnet_like(path, stem_channels=12)
    reasons = likely_reasons(path)
    assert reasons == ["2 convolution(s) with channel counts that are not multiples of 8 (set round_to)"]


def qdq_convs(path, relu_zero_point: int) -> None:
    """Two U8S8 Q/DQ convolutions: the first followed by Relu and a quantizer (as ONNX Runtime's
    own static quantization writes, with zero point 0), the second by hard-swish with no quantizer
    (as NNCF writes a convolution whose output goes to an op it does not quantize)."""
    u8 = lambda name, v: numpy_helper.from_array(np.array(v, np.uint8), name)  # noqa: E731
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w1q", "ws"], ["w1"]),
        helper.make_node("Conv", ["xd", "w1"], ["c1"], pads=[1, 1, 1, 1], name="followed_by_a_quantizer"),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("QuantizeLinear", ["r1", "s", "zr"], ["r1q"]),
        helper.make_node("DequantizeLinear", ["r1q", "s", "zr"], ["r1d"]),
        helper.make_node("DequantizeLinear", ["w2q", "ws"], ["w2"]),
        helper.make_node("Conv", ["r1d", "w2"], ["c2"], pads=[1, 1, 1, 1], name="followed_by_hardswish"),
        helper.make_node("HardSigmoid", ["c2"], ["h"], alpha=1 / 6),
        helper.make_node("Mul", ["c2", "h"], ["y"]),
    ]
    w = np.random.default_rng(0).integers(-100, 100, (16, 16, 3, 3)).astype(np.int8)
    inits = [numpy_helper.from_array(np.array(0.02, np.float32), "s"), u8("z", 128), u8("zr", relu_zero_point),
             numpy_helper.from_array(w, "w1q"), numpy_helper.from_array(w, "w2q"),
             numpy_helper.from_array(np.array(0.001, np.float32), "ws")]  # fmt: skip
    save_graph(path, nodes, inits, [1, 16, 16, 16], [1, 16, 16, 16])


@pytest.mark.parametrize("relu_zero_point, blamed", [(0, 1), (128, 2)])
def test_quantized_convs_without_a_quantizer_on_their_output_are_blamed_as_onnx_runtime_runs_them(
    tmp_path, relu_zero_point, blamed
):
    """Zero point 0 makes the Relu redundant, so ONNX Runtime fuses the first convolution; with 128
    it cannot, and both run in float."""
    import onnxruntime as ort

    path = tmp_path / "model.onnx"
    qdq_convs(path, relu_zero_point)
    reasons = likely_reasons(path)
    assert any(r.startswith(f"{blamed} quantized convolution(s) with no quantizer on the output") for r in reasons)
    options = ort.SessionOptions()  # ONNX Runtime's own fusion agrees
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert ops.count("QLinearConv") == 2 - blamed and ops.count("Conv") + ops.count("FusedConv") == blamed, ops
