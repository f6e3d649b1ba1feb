"""The Python API: compress.load_recipe, compress.run and compress.profile, as a notebook uses them."""

from __future__ import annotations

import pytest

import compress
from compress.errors import RecipeError, UsageError
from compress.report.schema import Report


@pytest.mark.slow
def test_run_takes_overrides_and_returns_the_report_it_wrote(tiny_recipe, tmp_path):
    out = tmp_path / "out"
    report = compress.run(tiny_recipe, out, {"stages[train].epochs": 1}, log=None, seed=3)
    assert isinstance(report, Report)
    assert [v.name for v in report.variants] == ["fp32", "int8"]
    assert report.variant("int8").accuracy.target == "tiny-ort"
    overridden = compress.load_recipe(tiny_recipe, ["stages[train].epochs=1", "seed=3"])
    assert report.recipe.hash == overridden.content_hash != compress.load_recipe(tiny_recipe).content_hash
    assert Report.load(out / "report.json") == report


def test_load_recipe_raises_every_problem_as_an_exception(tiny_recipe):
    with pytest.raises(RecipeError) as caught:
        compress.load_recipe(tiny_recipe, {"stages[train].epocs": 1, "stages[export].opset": 3})
    assert len(caught.value.problems) == 2


def test_run_refuses_overrides_for_a_loaded_recipe(tiny_recipe):
    with pytest.raises(UsageError, match="overrides apply when loading"):
        compress.run(compress.load_recipe(tiny_recipe), seed=1)


@pytest.mark.slow
def test_profile_times_a_model_file_on_named_targets(mlp, tmp_path, monkeypatch, write):
    write(
        "tiny-ort.yaml",
        "name: tiny-ort\nruntime: onnxruntime\nprotocol: {min_iterations: 5, min_seconds: 0.05, rounds: 1}\n",
    )
    monkeypatch.chdir(tmp_path)
    report = compress.profile([mlp], ["tiny-ort"], tmp_path / "profile", log=None)
    (variant,) = report.variants
    assert variant.name == "mlp" and variant.latency[0].target == "tiny-ort"
    assert (tmp_path / "profile" / "report.html").is_file()


def test_override_values_need_not_be_json(tiny_recipe, tmp_path):
    import datetime
    from pathlib import Path

    (tmp_path / "d.npz").write_bytes(b"")
    recipe = compress.load_recipe(tiny_recipe, {"data.source": "npz", "data.path": Path("d.npz")},
                                  description=datetime.date(2026, 1, 2))  # fmt: skip
    assert recipe.data.path == "d.npz" and recipe.description == "2026-01-02"
