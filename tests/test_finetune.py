"""Fine-tuning with logit and feature distillation; teacher outputs computed once and cached."""

from __future__ import annotations

import pytest

from compress.artifact import Artifact, save_torch
from compress.errors import RecipeError, StageError
from compress.models import build_model
from compress.recipe import ModelSpec, recipe_from_text
from compress.stages.finetune import FinetuneStage
from compress.stages.options import Distill, FeaturePair
from tests.test_prune import make_splits, stage_ctx


def artifact(tmp_path, model, name: str) -> Artifact:
    folder = tmp_path / name
    folder.mkdir()
    return Artifact("torch", save_torch(model, folder), key=f"key-{name}", folder=folder)


def test_distillation_with_feature_projection_and_cached_teacher(tmp_path):
    splits = make_splits(16)
    teacher = build_model(ModelSpec(arch="resnet", options={"width": 16, "blocks": [1, 1]}), tmp_path, 1, 10, 16)
    student = build_model(ModelSpec(arch="resnet", options={"width": 8, "blocks": [1, 1]}), tmp_path, 1, 10, 16)
    refs = {"train": artifact(tmp_path, teacher.eval(), "teacher")}
    distill = Distill(teacher="train", features=[FeaturePair(student="layers.0", teacher="layers.0")])
    cfg = FinetuneStage(type="finetune", name="ft", epochs=2, batch_size=8, distill=distill)
    logs: list[str] = []
    for run in ("a", "b"):
        ctx = stage_ctx(tmp_path, splits, f"ft-{run}")
        ctx.refs, ctx.log = refs, logs.append
        out = cfg.run(artifact(tmp_path, student, f"student-{run}"), ctx)
        assert out.meta["distilled_from"] == "train" and len(out.meta["history"]) == 2
    assert (tmp_path / "teacher-logits-key-teacher.npy").is_file()
    assert any("reusing cached teacher outputs" in line for line in logs)


def test_unknown_feature_layer_is_a_clear_error(tmp_path):
    splits = make_splits(16)
    model = build_model(ModelSpec(arch="resnet", options={"width": 8, "blocks": [1, 1]}), tmp_path, 1, 10, 16)
    cfg = FinetuneStage(type="finetune", name="ft", epochs=1,
                        distill=Distill(teacher="t", features=[FeaturePair(student="layer9", teacher="layers.0")]))  # fmt: skip
    ctx = stage_ctx(tmp_path, splits, "ft")
    ctx.refs = {"t": artifact(tmp_path, model.eval(), "t")}
    with pytest.raises(StageError) as info:
        cfg.run(artifact(tmp_path, model, "s"), ctx)
    assert "layer9" in info.value.message and "layers.0" in info.value.hint


CHAIN = """\
name: r
model: {arch: resnet}
stages:
  - type: train
  - type: prune
  - type: finetune
    distill: {}
  - type: export
"""


def test_default_teacher_is_the_model_before_pruning():
    recipe = recipe_from_text(CHAIN, "r.yaml")
    assert recipe.stage("finetune").distill.teacher == "train"


def test_distill_without_pruning_needs_a_named_teacher():
    with pytest.raises(RecipeError) as info:
        recipe_from_text(CHAIN.replace("  - type: prune\n", ""), "r.yaml")
    assert "stages[1].distill: no default teacher" in str(info.value.problems[0])


def test_named_teacher_must_exist():
    text = CHAIN.replace("distill: {}", "distill: {teacher: trian}")
    with pytest.raises(RecipeError) as info:
        recipe_from_text(text, "r.yaml")
    assert "did you mean 'train'" in str(info.value.problems[0])
    text = CHAIN.replace("distill: {}", "distill: {teacher: teacher}")
    with pytest.raises(RecipeError) as info:
        recipe_from_text(text, "r.yaml")
    assert "needs a top-level 'teacher:'" in str(info.value.problems[0])
    ok = recipe_from_text("teacher: {arch: resnet, options: {width: 64}}\n" + text, "r.yaml")
    assert ok.stage("finetune").references() == ["teacher"]


def test_features_auto_matches_the_last_block_at_each_resolution_of_a_pruned_student(tmp_path):
    from compress.stages.prune import PruneStage

    splits = make_splits(16)
    teacher = build_model(ModelSpec(arch="resnet", options={"width": 16, "blocks": [1, 1, 1]}), tmp_path, 1, 10, 16)
    refs = {"train": artifact(tmp_path, teacher.eval(), "teacher")}
    pruned = PruneStage(type="prune", name="p", ratio=0.5).run(refs["train"], stage_ctx(tmp_path, splits, "p"))
    pruned.folder = tmp_path / "p"
    logs: list[str] = []
    ctx = stage_ctx(tmp_path, splits, "ft")
    ctx.refs, ctx.log = refs, logs.append
    cfg = FinetuneStage(
        type="finetune", name="ft", epochs=1, batch_size=8, distill=Distill(teacher="train", features="auto")
    )
    cfg.run(pruned, ctx)
    assert "distill: matching features of layers.0, layers.1, layers.2" in logs

    other = build_model(ModelSpec(arch="mobilenetv2", options={"width": 8, "blocks": [1, 1]}), tmp_path, 1, 10, 16)
    logs.clear()
    other_ctx = stage_ctx(tmp_path, splits, "ft-other")
    other_ctx.refs, other_ctx.log = refs, logs.append
    cfg.run(artifact(tmp_path, other, "other"), other_ctx)
    assert any("structure differs from the student's; logits only" in line for line in logs)
