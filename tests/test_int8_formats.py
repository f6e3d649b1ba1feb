"""INT8 that the target can run: a quantize stage made `for:` targets takes their runtime's format
(TensorRT: symmetric, zero point 0), and a variant whose format a target runs badly is flagged."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

from compress.artifact import Kind
from compress.errors import RecipeError
from compress.recipe import recipe_from_text
from tests.conftest import TINY_TARGET, cli
from tests.test_tensorrt import FAKE_TRTEXEC

BASE = """\
name: f
model: {arch: resnet, options: {width: 8, blocks: [1, 1]}}
data: {source: digits, image_size: 16}
stages:
  - type: train
  - type: export
  - type: quantize
"""


def problems(text: str) -> list[str]:
    with pytest.raises(RecipeError) as info:
        recipe_from_text(text, "r.yaml")
    return [str(p) for p in info.value.problems]


def test_for_a_tensorrt_target_settles_symmetric_int8_in_the_stage():
    recipe = recipe_from_text(BASE + "    for: [jetson-orin-nano]\n", "r.yaml")
    stage = recipe.stage("quantize")
    assert (stage.activations, stage.weights, stage.symmetric, stage.per_channel, stage.reduce_range) == (
        "int8", "int8", True, True, False)  # fmt: skip
    plain = recipe_from_text(BASE, "r.yaml").stage("quantize")
    assert (plain.activations, plain.symmetric) == ("uint8", False)


def test_for_an_openvino_target_quantizes_with_nncf():
    stage = recipe_from_text(BASE + "    for: [cpu-openvino]\n", "r.yaml").stage("quantize")
    assert stage.backend == "openvino" and stage.produces == Kind.OPENVINO


def test_nncf_on_the_onnx_graph_is_made_for_onnxruntime_targets():
    stage = recipe_from_text(BASE + "    for: [cpu-onnxruntime]\n    backend: nncf\n", "r.yaml").stage("quantize")
    assert stage.backend == "nncf" and stage.produces == Kind.ONNX


@pytest.mark.parametrize(
    ("extra", "where", "message"),
    [
        ("    for: [gpu-tensorrtt]\n", "r.yaml:8:11: stages[2].for[0]", "not found (did you mean 'gpu-tensorrt'?)"),
        ("    for: [gpu-tensorrt]\n    activations: uint8\n", "r.yaml:9:5: stages[2].activations",
         "target gpu-tensorrt takes symmetric INT8 (zero point 0, per-channel weights), so activations must be 'int8'"),
        ("    for: [gpu-tensorrt, cpu-onnxruntime]\n", "r.yaml:8:5: stages[2].for", "take different INT8 formats"),
        ("    for: [gpu-tensorrt]\n    method: dynamic\n", "r.yaml:9:5: stages[2].method", "not dynamic quantization; use method: ptq"),
        ("    for: [gpu-tensorrt]\n    backend: nncf\n", "r.yaml:9:5: stages[2].backend",
         "backend nncf makes ONNX Runtime's U8S8 QDQ; use backend: onnxruntime"),
        ("    for: [cpu-openvino]\n    backend: nncf\n", "r.yaml:9:5: stages[2].backend",
         "takes NNCF's INT8 OpenVINO IR, and backend nncf makes ONNX Runtime's U8S8 QDQ; use backend: openvino"),
        ("    for: [cpu-onnxruntime]\n    backend: openvino\n", "r.yaml:9:5: stages[2].backend",
         "backend openvino makes an OpenVINO IR, which it cannot load"),
        ("    for: [cpu-openvino]\n    activations: int8\n", "r.yaml:8:5: stages[2].for", "but activations do(es) not apply to backend 'openvino'"),
    ],
)  # fmt: skip
def test_settings_that_contradict_the_target_are_located(extra, where, message):
    (found,) = problems(BASE + extra)
    assert found.startswith(where) and message in found


def test_symmetric_needs_signed_activations():
    (found,) = problems(BASE + "    symmetric: true\n")
    assert found.startswith("r.yaml:7:5: stages[2]") and "set activations: int8" in found


def zero_points(path) -> dict[str, np.ndarray]:
    """Every Q/DQ node's zero point, by node name."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    init.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"})
    return {n.name: init[n.input[2]] for n in graph.node
            if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2}  # fmt: skip


RECIPE = """\
name: formats
model: {arch: resnet, options: {width: 8, blocks: [1, 1]}}
data: {source: digits, image_size: 16}
stages:
  - {type: train, epochs: 1, batch_size: 64, lr: 0.01}
  - {type: export}
  - {type: quantize, calibration: {samples: 64}}
  - {type: quantize, name: int8-trt, input: export, for: [gpu-trt], calibration: {samples: 64}}
  - {type: quantize, name: qat-trt, input: train, method: qat, for: [gpu-trt], calibration: {samples: 64},
     qat: {epochs: 1, batch_size: 64}}
targets: [tiny-ort, gpu-trt]
"""


@pytest.mark.slow
def test_quantized_for_tensorrt_has_only_zero_point_zero_and_u8s8_is_flagged_there_with_a_fake_trtexec(write, tmp_path):
    """The TensorRT target runs through a stand-in trtexec (no GPU here) that runs the file in
    ONNX Runtime: what is checked is the quantized graphs and the warnings, not TensorRT."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "trtexec"
    fake.write_text(FAKE_TRTEXEC.format(python=sys.executable))
    fake.chmod(0o755)
    write("tiny-ort.yaml", TINY_TARGET)
    write("gpu-trt.yaml", f"""\
        name: gpu-trt
        runtime: tensorrt
        device: gpu
        precision: fp16
        eval_batch_size: 64
        tensorrt: {{trtexec: {fake}, engine_cache: {tmp_path / "engines"}}}
        protocol: {{warmup: 1, min_iterations: 10, min_seconds: 0.05, max_seconds: 5, rounds: 1}}
        """)  # fmt: skip
    recipe = write("formats.yaml", RECIPE)
    out = tmp_path / "out"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    done = cli("run", str(recipe), "-o", str(out), cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    variants = {v["name"]: v for v in report["variants"]}

    for name in ("int8-trt", "qat-trt"):
        found = zero_points(out / variants[name]["path"])
        assert not any(z.any() for z in found.values()), name  # zero point 0 everywhere
        assert {z.dtype for z in found.values()} <= {np.dtype(np.int8), np.dtype(np.int32)}  # INT8, INT32 biases
        assert sum(z.dtype == np.int8 for z in found.values()) >= 10, name
        assert variants[name]["details"]["symmetric"] is True and variants[name]["details"]["for_targets"] == [
            "gpu-trt"
        ]
    on_trt = min((lat for lat in variants["int8-trt"]["latency"] if lat["target"] == "gpu-trt"),
                 key=lambda lat: lat["batch_size"])  # fmt: skip
    assert on_trt["layers"]["nodes"] > 10 and on_trt["layers"]["trace"] == "profiles/int8-trt@gpu-trt.json"
    u8s8 = zero_points(out / variants["int8"]["path"])
    assert any(z.dtype == np.uint8 and z.any() for z in u8s8.values())  # the default keeps its zero points

    warned = [w for w in report["warnings"] if " on gpu-trt: " in w]
    assert warned == [
        "int8 on gpu-trt: TensorRT runs only symmetric INT8 (zero point 0), and this file has uint8 activations "
        "with zero points; or quantize for this target with for: [gpu-trt] in stage 'quantize'"
    ]
    on_cpu = [w for w in report["warnings"] if " on tiny-ort: " in w]
    assert sorted(w.split(" on ")[0] for w in on_cpu) == ["int8-trt (made for gpu-trt)", "qat-trt (made for gpu-trt)"]
    assert all("set activations: uint8" in w for w in on_cpu)
    assert warned[0] in " ".join(done.stdout.split())  # shown in the terminal too
    assert "for: [gpu-trt]" in (out / "report.md").read_text()


def test_qat_fake_quantizer_for_tensorrt_is_symmetric():
    import torch

    from compress.stages.quantize.qat import FakeQuant

    fq = FakeQuant(symmetric=True)
    fq.observe(torch.tensor([-0.5, 3.0]))
    scale, zero_point = fq.qparams()
    assert zero_point == 0 and scale == pytest.approx(3.0 / 127)
    affine = FakeQuant()
    affine.observe(torch.tensor([-0.5, 3.0]))
    assert affine.qparams()[1] != 0


def test_modelopt_backend_takes_only_its_own_settings():
    with pytest.raises(RecipeError) as info:
        recipe_from_text(BASE + "    backend: modelopt\n    activations: int8\n", "r.yaml")
    assert "activations do(es) not apply to backend 'modelopt'" in str(info.value.problems[0])
    (found,) = problems(BASE + "    backend: modelopt\n    calibration: {method: percentile}\n")
    assert "backend 'modelopt' does method: ptq with calibration.method minmax or entropy" in found
    (found,) = problems(BASE + "    backend: modelopt\n    for: [cpu-onnxruntime]\n")
    assert found.startswith("r.yaml:8:5: stages[2].backend") and "backend modelopt makes TensorRT's format" in found


@pytest.mark.skipif(importlib.util.find_spec("modelopt") is not None, reason="nvidia-modelopt is installed here")
def test_modelopt_backend_without_the_package_exits_3_naming_the_extra(tiny_recipe, tmp_path):
    text = tiny_recipe.read_text().replace("    calibration: {samples: 64}", "    backend: modelopt")
    tiny_recipe.write_text(text)
    result = cli("run", str(tiny_recipe), "-o", str(tmp_path / "o"))
    assert result.returncode == 3, result.stderr
    assert "pip install 'compress-edge[modelopt]'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o" / "cache").exists(), "nothing ran before the check"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("modelopt") is None,
                    reason="nvidia-modelopt is not installed: its ONNX extra brings onnxruntime-gpu, which replaces "
                    "the CPU onnxruntime the rest of this suite runs on")  # fmt: skip
def test_modelopt_makes_zero_point_zero_int8(tiny_recipe, tmp_path):
    text = tiny_recipe.read_text().replace(
        "    calibration: {samples: 64}", "    backend: modelopt\n    calibration: {samples: 64}"
    )
    tiny_recipe.write_text(text)
    out = tmp_path / "o"
    result = cli("run", str(tiny_recipe), "-o", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    (int8,) = [v for v in json.loads((out / "report.json").read_text())["variants"] if v["name"] == "int8"]
    found = zero_points(out / int8["path"])
    assert found and not any(z.any() for z in found.values()) and int8["details"]["backend"] == "modelopt"
