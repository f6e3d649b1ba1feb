"""Recipe loading: each kind of mistake is reported with its place, its field path and a fix."""

from __future__ import annotations

import pytest

from compress.errors import RecipeError
from compress.recipe import load_recipe, parse_field_path, recipe_from_text

BASE = """\
name: r
model:
  arch: resnet
stages:
  - type: train
  - type: export
  - type: quantize
"""


def problems(text: str, overrides=()) -> list[str]:
    with pytest.raises(RecipeError) as info:
        recipe_from_text(text, "r.yaml", tuple(overrides))
    return [str(p) for p in info.value.problems]


def test_valid_recipe_gets_default_names_and_variants():
    recipe = recipe_from_text(BASE, "r.yaml")
    assert [s.name for s in recipe.stages] == ["train", "export", "quantize"]
    assert [s.variant for s in recipe.stages] == [None, "fp32", "int8"]


def test_unknown_key_names_line_path_and_suggestion():
    text = BASE.replace("  - type: train\n", "  - type: train\n    epocs: 3\n")
    (msg,) = problems(text)
    assert msg.startswith("r.yaml:6:5: stages[0].epocs: unknown key 'epocs' (did you mean 'epochs'?)")
    assert "allowed keys:" in msg


def test_unknown_stage_type_suggests_the_closest():
    (msg,) = problems(BASE.replace("type: quantize", "type: quantise"))
    assert "r.yaml:7:" in msg and "stages[2].type" in msg
    assert "unknown type 'quantise' (did you mean 'quantize'?)" in msg


def test_wrong_type_and_out_of_range_are_reported_together():
    text = BASE.replace("  - type: train\n", "  - type: train\n    epochs: many\n    lr: -1\n")
    msgs = problems(text)
    assert len(msgs) == 2
    assert any("stages[0].epochs" in m and "integer" in m and "'many'" in m for m in msgs)
    assert any("stages[0].lr" in m and "greater than 0" in m for m in msgs)


def test_a_value_fitting_no_form_of_a_field_is_one_problem_saying_each_form():
    text = BASE.replace("  - type: train\n", "  - type: train\n    dropout: 2\n")
    (msg,) = problems(text)
    assert msg.startswith("r.yaml:6:5: stages[0].dropout: ")
    assert "less than 1 (got 2)" in msg and "; or: " in msg and "expected one of: auto" in msg


def test_nested_field_path_and_literal_suggestion():
    text = BASE.replace("  - type: quantize\n", "  - type: quantize\n    calibration: {method: entropi, samples: 0}\n")
    msgs = problems(text)
    assert any("stages[2].calibration.method" in m and "did you mean 'entropy'" in m for m in msgs)
    assert any("stages[2].calibration.samples" in m and "greater than or equal to 1" in m for m in msgs)


def test_bad_stage_order_is_refused_with_a_fix():
    text = BASE.replace("  - type: export\n  - type: quantize\n", "  - type: quantize\n  - type: export\n")
    msgs = problems(text)
    assert any("stages[1].type" in m and "needs an exported ONNX model" in m and "after an 'export'" in m for m in msgs)


def test_missing_files_are_reported(tmp_path):
    text = BASE.replace("  arch: resnet\n", "  python: nowhere.py:build\n  checkpoint: missing.pt\n")
    msgs = problems(text)
    assert any("model.python" in m and "file not found" in m for m in msgs)
    assert any("model.checkpoint" in m and "checkpoint not found" in m for m in msgs)


def test_missing_required_section_and_model_source():
    msgs = problems("name: r\nmodel: {options: {}}\nstages: [{type: export}]\n")
    assert any("model:" in m and "exactly one of 'arch' or 'python'" in m for m in msgs)


def test_unknown_model_and_model_option():
    msgs = problems(BASE.replace("arch: resnet", "arch: resnett\n  options: {widht: 8}"))
    assert any("unknown model 'resnett' (did you mean 'resnet'?)" in m for m in msgs)
    msgs = problems(BASE.replace("arch: resnet", "arch: resnet\n  options: {widht: 8}"))
    assert any("model.options.widht" in m and "did you mean 'width'" in m for m in msgs)


def test_unknown_target_suggests_shipped_ones():
    (msg,) = problems(BASE + "targets: [cpu-onnxruntim]\n")
    assert "targets[0]" in msg and "did you mean 'cpu-onnxruntime'" in msg


def test_yaml_syntax_error_has_a_line():
    (msg,) = problems("name: r\nstages: [\n")
    assert msg.startswith("r.yaml:") and "not valid YAML" in msg


def test_duplicate_keys_are_refused():
    (msg,) = problems(BASE + "seed: 1\nseed: 2\n")
    assert "seed: key appears twice" in msg


def test_overrides_use_field_paths_and_stage_names():
    recipe = recipe_from_text(BASE, "r.yaml", ("stages[train].epochs=3", "stages[2].calibration.samples=32", "seed=7"))
    assert recipe.stages[0].epochs == 3 and recipe.stages[2].calibration.samples == 32 and recipe.seed == 7


def test_override_mistakes_name_the_option():
    msgs = problems(BASE, ["stages[trian].epochs=3"])
    assert msgs == [
        "--set stages[trian].epochs=3: stages[trian].epochs: no stage named 'trian' (did you mean 'train'?)"
    ]
    (msg,) = problems(BASE, ["stages[train].epocs=3"])
    assert "stages[0].epocs" in msg and "did you mean 'epochs'" in msg
    assert "expected PATH=VALUE" in problems(BASE, ["seed"])[0]


def test_parse_field_path():
    assert parse_field_path("stages[2].calibration.samples") == ["stages", 2, "calibration", "samples"]
    assert parse_field_path("stages[prune].ratio") == ["stages", "prune", "ratio"]
    assert parse_field_path("stages..x") is None


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError) as info:
        load_recipe(tmp_path / "nope.yaml")
    assert "file not found" in str(info.value.problems[0])


def test_named_models_start_their_own_chains():
    text = BASE.replace("stages:\n", "models:\n  vit: {arch: vit}\nstages:\n") + (
        "  - {type: train, name: vit-train, input: vit}\n  - {type: export, name: vit-export}\n"
    )
    recipe = recipe_from_text(text, "r.yaml")
    assert list(recipe.sources()) == ["model", "vit"]
    assert recipe.stage("vit-export").variant == "vit-export"
    (msg,) = problems(text.replace("input: vit}", "input: vti}"))
    assert "input 'vti' is not an earlier stage (did you mean 'vit'?)" in msg
    (msg,) = problems(text.replace("vit: {arch: vit}", "vit: {arch: vitt}"))
    assert "models.vit.arch" in msg and "did you mean 'vit'" in msg


def test_override_inside_a_scalar_names_the_scalar():
    assert problems(BASE, ["name.foo=1"]) == ["--set name.foo=1: name: cannot set 'foo' inside a scalar value"]
    (msg,) = problems(BASE + "seed: 3\n", ["seed.a.b=1"])
    assert msg == "--set seed.a.b=1: seed: cannot set 'a' inside a scalar value"
    (msg,) = problems(BASE, ["stages[train].type.x=1"])
    assert msg == "--set stages[train].type.x=1: stages[train].type: cannot set 'x' inside a scalar value"


@pytest.mark.parametrize("seed", ["100000000000000000000000000000000000", "1e35", "1.0e+35", "4294967296", "-1"])
def test_seed_is_bounded_to_what_the_random_generators_take(seed):
    (msg,) = problems(BASE + f"seed: {seed}\n")
    assert msg.startswith("r.yaml:8:1: seed: ")
    assert recipe_from_text(BASE + "seed: 4294967295\n", "r.yaml").seed == 2**32 - 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: &x [*x]\n", "r.yaml:1:4: a[0]: an alias here refers to a node that contains it"),
        ("name: r\nmodel: &m {arch: resnet, options: {m: *m}}\n", "model.options.m: an alias here refers to a node"),
        ("a: " + "[" * 2000 + "]" * 2000 + "\n", "nested too deeply"),
        ("a: &a [x, x, x, x, x, x, x, x, x, x]\n"
         + "".join(f"{c}: &{c} [{', '.join(['*' + chr(ord(c) - 1)] * 10)}]\n" for c in "bcdefgh"),
         "more than 100000 values once its aliases are expanded"),
    ],
)  # fmt: skip
def test_recursive_deep_or_exploding_yaml_is_a_located_problem(text, expected):
    (msg,) = problems(text)
    assert expected in msg


def test_override_values_that_nest_too_deep_or_refer_to_themselves_are_problems():
    (msg,) = problems(BASE, ["description=" + "[" * 3000])
    assert msg.startswith("--set description=[[[") and "description: value '[[[" in msg and "nested too deeply" in msg
    (msg,) = problems(BASE, ["model.options=&x {a: *x}"])
    assert "model.options: value '&x {a: *x}': an alias here refers to a node that contains it" in msg


def test_sweep_values_of_any_yaml_type_reach_validation():
    text = BASE + "sweep:\n  parameters:\n    stages[train].epochs: [2020-01-01, .nan, 2]\n"
    msgs = problems(text)
    assert msgs and all("sweep point epochs=" in m for m in msgs)
    assert any("epochs=2020-01-01" in m and "stages[0].epochs" in m for m in msgs)


@pytest.mark.parametrize(("targets", "multiple"), [("[cpu-onnxruntime]", 16), ("[cpu-openvino, gpu-tensorrt]", 32)])
def test_round_to_auto_takes_the_largest_channel_multiple_of_the_targets(targets, multiple):
    recipe = recipe_from_text(
        "name: r\nmodel: {arch: resnet}\n"
        "stages: [{type: prune, round_to: auto}, {type: export}]\n"
        f"targets: {targets}\n"
    )
    assert recipe.stages[0].round_to == multiple
