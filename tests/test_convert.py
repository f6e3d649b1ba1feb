"""`convert`: fp16 files and bf16 compute as variants of their own, measured on the runtimes that
run them (ONNX Runtime and OpenVINO here, for real)."""

from __future__ import annotations

import json

import pytest

from compress.errors import RecipeError
from compress.recipe import recipe_from_text
from tests.conftest import TINY_TARGET, cli

RECIPE = """\
name: precisions
model: {arch: resnet, options: {width: 8, blocks: [1, 1]}}
data: {source: digits, image_size: 16}
stages:
  - {type: train, epochs: 2, batch_size: 64, lr: 0.01}
  - {type: export}
  - {type: convert, precision: fp16}
  - {type: convert, name: bf16, input: export, precision: bf16}
targets: [tiny-ort, tiny-ov]
"""


def bf16_cpu() -> bool:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        flags = f.read()
    return "avx512_bf16" in flags or "amx_bf16" in flags


@pytest.mark.slow
@pytest.mark.openvino
def test_fp16_and_bf16_variants_are_measured_where_they_run(write, tmp_path):
    import onnx

    write("tiny-ort.yaml", TINY_TARGET)
    write("tiny-ov.yaml", TINY_TARGET.replace("name: tiny-ort", "name: tiny-ov").replace("onnxruntime", "openvino"))
    out = tmp_path / "out"
    done = cli("run", str(write("p.yaml", RECIPE)), "-o", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    v = {x["name"]: x for x in report["variants"]}
    assert [x["name"] for x in report["variants"]] == ["fp32", "fp16", "bf16"]
    assert v["fp16"]["parent"] == "fp32" and v["bf16"]["parent"] == "fp32" and not v["bf16"]["errors"]

    graph = onnx.load(str(out / v["fp16"]["path"])).graph
    assert {t.data_type for t in graph.initializer if t.data_type in (1, 10)} == {onnx.TensorProto.FLOAT16}
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # I/O kept fp32
    weights = {n: sum(len(t.raw_data) for t in onnx.load(str(out / v[n]["path"])).graph.initializer if t.data_type in (1, 10))
               for n in ("fp32", "fp16")}  # fmt: skip
    assert weights["fp16"] * 2 == weights["fp32"] and v["fp16"]["size_bytes"] < v["fp32"]["size_bytes"]
    for target in ("tiny-ort", "tiny-ov"):
        fp32, fp16 = (next(a for a in v[n]["accuracy_per_target"] if a["target"] == target) for n in ("fp32", "fp16"))
        assert abs(fp16["value"] - fp32["value"]) <= 1.0, target

    assert {lat["target"] for lat in v["bf16"]["latency"]} == {"tiny-ov"}  # ONNX Runtime has no bf16 to set
    precision = {lat["precision"] for lat in v["bf16"]["latency"]}
    assert precision == ({"bf16"} if bf16_cpu() else {"fp32"})  # what OpenVINO reports it computed in
    assert {lat["precision"] for lat in v["fp32"]["latency"] if lat["target"] == "tiny-ov"} == {"fp32"}
    ov = next(a for a in v["bf16"]["accuracy_per_target"] if a["target"] == "tiny-ov")
    assert abs(ov["value"] - v["fp32"]["accuracy"]["value"]) <= 1.5


BASE = """\
name: c
model: {arch: resnet, options: {width: 8, blocks: [1, 1]}}
stages:
  - type: train
  - type: export
"""


def test_convert_settings_and_order_are_checked():
    recipe = recipe_from_text(BASE + "  - {type: convert, precision: fp16}\n", "r.yaml")
    assert recipe.stage("convert").variant == "fp16"
    with pytest.raises(RecipeError) as info:
        recipe_from_text(BASE + "  - {type: convert, precision: int4}\n", "r.yaml")
    assert (
        str(info.value.problems[0])
        == "r.yaml:6:21: stages[2].precision: unknown value 'int4'; expected one of: fp16, bf16"
    )
    with pytest.raises(RecipeError) as info:
        recipe_from_text(BASE + "  - {type: convert, input: train, precision: fp16}\n", "r.yaml")
    assert "stages[2].type" in str(info.value.problems[0])


def test_onnxruntime_targets_refuse_a_precision_they_would_ignore():
    from pydantic import ValidationError

    from compress.targets import TargetSpec

    with pytest.raises(ValidationError, match="onnxruntime takes fp32"):
        TargetSpec(name="t", runtime="onnxruntime", precision="bf16")
    assert TargetSpec(name="t", runtime="openvino", precision="bf16").precision == "bf16"
