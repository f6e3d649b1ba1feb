"""OpenVINO compiles a model for the input shapes it runs at (a target's `shapes: static`, the
default), as a deployment at known shapes does, or once for any shape (`shapes: dynamic`); the
report says which."""

from __future__ import annotations

import json

import numpy as np
import pytest

from compress.targets import TargetSpec
from tests.conftest import cli

pytestmark = pytest.mark.openvino

TARGET = """\
name: tiny-ov
runtime: openvino
threads: 1
batch_sizes: [1, 4]
protocol: {warmup: 2, min_iterations: 10, min_seconds: 0.05, max_seconds: 5, rounds: 2}
"""


def session(mlp, **fields):
    from compress.runtimes.openvino import OpenVINORuntime

    return OpenVINORuntime(TargetSpec(name="v", runtime="openvino", **fields)).load(mlp, 1)


def reference(mlp, x: np.ndarray) -> np.ndarray:
    import onnx
    from onnx import numpy_helper

    (weights,) = onnx.load(str(mlp)).graph.initializer
    return np.maximum(x @ numpy_helper.to_array(weights), 0)


def input_shape(compiled) -> str:
    return str(compiled.inputs[0].get_partial_shape())


def test_static_shapes_compile_the_model_once_for_each_shape_it_runs_at(mlp):
    ov = session(mlp)
    for batch in (1, 3, 1):
        x = np.random.default_rng(batch).standard_normal((batch, 64)).astype(np.float32)
        (y,) = ov.run({"x": x})
        np.testing.assert_allclose(y, reference(mlp, x), rtol=1e-4, atol=1e-4)
        assert input_shape(ov.compiled_for({"x": x})[0]) == f"[{batch},64]"
    assert len(ov._by_shape) == 2 and ov.shapes == "static"


def test_shapes_past_the_compiles_a_session_keeps_run_for_any_shape_and_the_session_says_so(mlp):
    from compress.runtimes.openvino import MAX_SHAPES

    ov = session(mlp)
    for batch in range(1, MAX_SHAPES + 2):
        ov.run({"x": np.zeros((batch, 64), np.float32)})
        assert ov.shapes == ("static" if batch <= MAX_SHAPES else f"static for {MAX_SHAPES} input shapes, then dynamic")
    assert input_shape(ov.compiled_for({"x": np.zeros((MAX_SHAPES + 1, 64), np.float32)})[0]) == "[?,64]"


def test_dynamic_shapes_run_every_batch_on_one_compiled_model(mlp):
    ov = session(mlp, shapes="dynamic")
    compiled = {input_shape(ov.compiled_for({"x": np.zeros((b, 64), np.float32)})[0]) for b in (1, 3)}
    assert compiled == {"[?,64]"} and ov.shapes == "dynamic"
    (y,) = ov.run({"x": np.ones((3, 64), np.float32)})
    np.testing.assert_allclose(y, reference(mlp, np.ones((3, 64), np.float32)), rtol=1e-4, atol=1e-4)


def test_shapes_is_refused_for_runtimes_that_do_not_compile_for_shapes(write):
    from compress.errors import RecipeError
    from compress.targets import load_target

    with pytest.raises(RecipeError) as info:
        load_target(write("t.yaml", "name: t\nruntime: onnxruntime\nshapes: static\n"))
    (found,) = info.value.problems
    assert found.path == "shapes" and found.line == 3
    assert "shapes applies to runtime openvino, not onnxruntime" in found.message


def test_the_report_says_which_shapes_openvino_compiled_for(tmp_path, write, mlp):
    for shapes, target in [("static", TARGET), ("dynamic", TARGET + "shapes: dynamic\n")]:
        out = tmp_path / shapes
        result = cli("profile", str(mlp), "-t", str(write(f"{shapes}.yaml", target)), "-o", str(out), "-q",
                     timeout=300)  # fmt: skip
        assert result.returncode == 0, result.stderr
        (variant,) = json.loads((out / "report.json").read_text())["variants"]
        assert [x["shapes"] for x in variant["latency"]] == [shapes] * 2
        assert f"Executed by: CPU; input shapes compiled: {shapes}" in (out / "report.md").read_text()


def test_a_model_of_fixed_shapes_is_compiled_once(mlp):
    import onnx

    model = onnx.load(str(mlp))
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = 2
    onnx.save(model, str(mlp))
    ov = session(mlp)
    (y,) = ov.run({"x": np.ones((2, 64), np.float32)})
    assert y.shape == (2, 10) and ov.shapes == "static" and not ov._by_shape
