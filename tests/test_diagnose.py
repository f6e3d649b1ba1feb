"""The "will it be faster?" diagnosis blames only what the graph really shows."""

from __future__ import annotations

import numpy as np
import onnx
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
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], inits,
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
