"""Structured pruning makes real CNNs smaller: fewer parameters, a smaller ONNX file that still runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch_pruning as tp

from compress.artifact import Artifact, load_torch, save_torch
from compress.data import Splits
from compress.errors import StageError
from compress.models import build_model
from compress.recipe import ModelSpec
from compress.runtimes.onnxruntime import OnnxSession
from compress.stages import StageContext
from compress.stages.export import ExportStage
from compress.stages.prune import PruneStage
from compress.tasks import get_task

MODELS = {
    "resnet": ModelSpec(arch="resnet", options={"width": 16, "blocks": [1, 1]}),
    "mobilenetv2": ModelSpec(arch="mobilenetv2", options={"width": 8, "blocks": [1, 1, 1]}),
    "torchvision-resnet18": ModelSpec(arch="torchvision:resnet18"),
    "torchvision-mobilenet_v3_small": ModelSpec(arch="torchvision:mobilenet_v3_small"),
}


def make_splits(size: int, channels: int = 1) -> Splits:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, channels, size, size)).astype(np.float32)
    y = (np.arange(24) % 10).astype(np.int64)
    return Splits(x, y, x, y, x, y, [str(i) for i in range(10)])


def stage_ctx(tmp_path, splits: Splits, name: str) -> StageContext:
    work = tmp_path / name
    work.mkdir()
    return StageContext(splits=splits, task=get_task("classification"), seed=0, workdir=work, log=lambda m: None,
                        shared_cache=tmp_path)  # fmt: skip


def prune_and_export(tmp_path, model, splits, cfg: PruneStage) -> tuple[Artifact, Artifact, Artifact]:
    folder = tmp_path / "src"
    folder.mkdir()
    source = Artifact("torch", save_torch(model, folder), folder=folder)
    pruned = cfg.run(source, stage_ctx(tmp_path, splits, "pruned"))
    pruned.folder = tmp_path / "pruned"
    exported = {}
    for name, art in (("full", source), ("small", pruned)):
        out = ExportStage(type="export", name=f"export-{name}").run(art, stage_ctx(tmp_path, splits, name))
        out.folder = tmp_path / name
        exported[name] = out
    return pruned, exported["full"], exported["small"]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_prune_export_and_run_in_onnxruntime(name, tmp_path):
    size = 64 if name.startswith("torchvision") else 16
    splits = make_splits(size)
    model = build_model(MODELS[name], tmp_path, 1, 10, size).eval()
    cfg = PruneStage(type="prune", name="prune", ratio=0.5)
    pruned, full, small = prune_and_export(tmp_path, model, splits, cfg)
    info = pruned.meta["pruning"]
    assert info["params_after"] < 0.6 * info["params_before"] and info["macs_after"] < info["macs_before"]
    assert small.path.stat().st_size < 0.6 * full.path.stat().st_size
    logits = OnnxSession(small.path, threads=1).run({"input": splits.x_test[:3]})[0]
    assert logits.shape == (3, 10), "the classifier keeps every class"
    reloaded = load_torch(pruned)  # the pruned module reloads without the recipe
    assert sum(p.numel() for p in reloaded.parameters()) == info["params_after"]


def test_round_to_keeps_channel_multiples(tmp_path):
    splits = make_splits(16)
    model = build_model(MODELS["resnet"], tmp_path, 1, 10, 16).eval()
    pruned, _, _ = prune_and_export(tmp_path, model, splits, PruneStage(type="prune", name="p", ratio=0.4, round_to=8))
    convs = [m for m in load_torch(pruned).modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.out_channels % 8 == 0 for c in convs)


@pytest.mark.parametrize("goal", [{"macs_reduction": 2.0}, {"params_reduction": 3.0}])
def test_prune_to_a_target_reduction(goal, tmp_path):
    splits = make_splits(16)
    model = build_model(MODELS["resnet"], tmp_path, 1, 10, 16).eval()
    example = torch.from_numpy(splits.x_test[:1])
    macs, params = tp.utils.count_ops_and_params(model, example)  # the unpruned model
    cfg = PruneStage(type="prune", name="p", importance="taylor", **goal)
    pruned, _, _ = prune_and_export(tmp_path, model, splits, cfg)
    small = load_torch(pruned)  # counted again from the saved model, not from the stage's own figures
    macs_after, params_after = tp.utils.count_ops_and_params(small, example)
    assert (pruned.meta["pruning"]["macs_after"], pruned.meta["pruning"]["params_after"]) == (macs_after, params_after)
    if "macs_reduction" in goal:
        assert macs / macs_after >= 2.0
    else:
        assert params / params_after >= 3.0


def conv_widths(model: torch.nn.Module) -> dict[str, int]:
    return {name: m.out_channels for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}


@pytest.mark.parametrize("importance", ["l1", "bn_scale"])
def test_other_importances_and_global_scope(importance, tmp_path):
    """Six of layers.0.conv1's 16 channels are made unimportant for the measure under test. Global
    pruning of 30 % in two steps removes all six: more than the 30 % (4 or 5) uniform pruning
    would take from that layer."""
    splits = make_splits(16)
    torch.manual_seed(0)
    model = build_model(MODELS["resnet"], tmp_path, 1, 10, 16).eval()
    block, weak = model.layers[0], slice(0, 6)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.weight.uniform_(0.5, 1.5)  # as training leaves them: not all 1
        block.bn1.bias.copy_(torch.arange(16.0))  # tags the channels (neither importance reads biases)
        block.bn1.weight[weak] = 1e-3
        if importance == "l1":
            block.conv1.weight[weak] *= 1e-3
            block.conv2.weight[:, weak] *= 1e-3
    cfg = PruneStage(type="prune", name="p", importance=importance, scope="global", ratio=0.3, steps=2, round_to=1)
    pruned, _, _ = prune_and_export(tmp_path, model, splits, cfg)
    kept = load_torch(pruned).layers[0].bn1.bias.round().int().tolist()
    assert sorted(kept) == kept and set(kept) <= set(range(6, 16)), kept
    info = pruned.meta["pruning"]
    assert info["params_after"] < 0.8 * info["params_before"]


def test_global_scope_prunes_layers_unevenly_and_uniform_scope_evenly(tmp_path):
    """Uniform pruning takes the same share from every layer; global pruning ranks all channels
    together, so layers lose different shares while the total removed stays the same."""
    splits = make_splits(16)
    shares, kept_channels = {}, {}
    for scope in ("uniform", "global"):
        folder = tmp_path / scope
        folder.mkdir()
        torch.manual_seed(0)
        model = build_model(MODELS["resnet"], folder, 1, 10, 16).eval()
        before = conv_widths(model)
        cfg = PruneStage(type="prune", name="p", importance="l1", scope=scope, ratio=0.5, round_to=1)
        pruned, _, _ = prune_and_export(folder, model, splits, cfg)
        after = conv_widths(load_torch(pruned))
        shares[scope] = {name: after[name] / before[name] for name in before}
        # One convolution per dependency group (the others share their output channels).
        kept_channels[scope] = sum(after[n] for n in ("stem.0", "layers.0.conv1", "layers.1.conv1", "layers.1.conv2"))
    assert set(shares["uniform"].values()) == {0.5}, shares["uniform"]
    assert len(set(shares["global"].values())) > 1, shares["global"]
    assert kept_channels["global"] == kept_channels["uniform"] == 48  # half of 16 + 16 + 32 + 32


def test_ignored_layers_are_left_whole(tmp_path):
    splits = make_splits(16)
    model = build_model(MODELS["resnet"], tmp_path, 1, 10, 16).eval()
    cfg = PruneStage(type="prune", name="p", ratio=0.5, ignore=["stem.0", "re:^layers\\.1\\."])
    pruned, _, _ = prune_and_export(tmp_path, model, splits, cfg)
    small = dict(load_torch(pruned).named_modules())
    assert small["stem.0"].out_channels == 16 and small["layers.1.conv1"].out_channels == 32


def test_unknown_ignore_pattern_is_a_clear_error(tmp_path):
    splits = make_splits(16)
    model = build_model(MODELS["resnet"], tmp_path, 1, 10, 16).eval()
    with pytest.raises(StageError) as info:
        prune_and_export(tmp_path, model, splits, PruneStage(type="prune", name="p", ignore=["stemm"]))
    assert "match no module" in info.value.message and "stem" in info.value.hint


def test_high_ratio_with_round_to_still_prunes_every_group(tmp_path):
    splits = make_splits(16)
    model = build_model(ModelSpec(arch="resnet", options={"width": 32, "blocks": [1, 1]}), tmp_path, 1, 10, 16).eval()
    pruned, _, _ = prune_and_export(tmp_path, model, splits, PruneStage(type="prune", name="p", ratio=0.85, round_to=8))
    convs = [m.out_channels for m in load_torch(pruned).modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0] == 8, convs  # 32 * 0.15 = 4.8 channels -> the nearest multiple of 8, not "unpruned"
    assert all(c % 8 == 0 for c in convs)


def test_vit_heads_and_mlp_are_pruned_and_the_model_still_exports(tmp_path):
    splits = make_splits(16)
    model = build_model(ModelSpec(arch="vit", options={"dim": 64, "depth": 2, "heads": 4}), tmp_path, 1, 10, 16)
    cfg = PruneStage(type="prune", name="p", ratio=0.5, heads_ratio=0.5)
    pruned, full, small = prune_and_export(tmp_path, model.eval(), splits, cfg)
    vit = load_torch(pruned)
    for block in vit.blocks:
        assert (block.attn.num_heads, block.attn.head_dim) == (2, 16)  # whole heads go, head size stays
        assert block.mlp[0].out_features == 64
    assert vit.patch_embed.out_channels == 64, "the residual width is kept by default"
    assert pruned.meta["pruning"]["heads"] == [[4, 2], [4, 2]]
    assert OnnxSession(small.path, threads=1).run({"input": splits.x_test[:2]})[0].shape == (2, 10)


def test_vit_embedding_width_is_pruned_on_request(tmp_path):
    splits = make_splits(16)
    model = build_model(ModelSpec(arch="vit", options={"dim": 64, "depth": 2, "heads": 4}), tmp_path, 1, 10, 16)
    pruned, _, small = prune_and_export(tmp_path, model.eval(), splits,
                                        PruneStage(type="prune", name="p", ratio=0.5, embedding=True))  # fmt: skip
    vit = load_torch(pruned)
    assert vit.patch_embed.out_channels == 32 and vit.pos_embed.shape[-1] == 32
    assert OnnxSession(small.path, threads=1).run({"input": splits.x_test[:2]})[0].shape == (2, 10)


def test_activation_importance_removes_the_heads_and_neurons_that_add_nothing(tmp_path):
    splits = make_splits(16)
    model = build_model(ModelSpec(arch="vit", options={"dim": 64, "depth": 1, "heads": 4}), tmp_path, 1, 10, 16)
    block = model.blocks[0]
    with torch.no_grad():  # large weights, yet heads 1 and 2 and the first half of the MLP are never read
        block.attn.proj.weight[:, 16:48] = 0
        block.mlp[2].weight[:, :64] = 0
        for projection in (block.attn.q, block.attn.k, block.attn.v):
            projection.weight[16:48].mul_(10)
        block.mlp[0].weight[:64].mul_(10)
    cfg = PruneStage(type="prune", name="p", importance="activation", ratio=0.5, heads_ratio=0.5)
    pruned, _, small = prune_and_export(tmp_path, model.eval(), splits, cfg)
    kept = load_torch(pruned).blocks[0]
    assert kept.attn.num_heads == 2 and torch.count_nonzero(kept.attn.proj.weight) == kept.attn.proj.weight.numel()
    assert torch.count_nonzero(kept.mlp[2].weight) == kept.mlp[2].weight.numel()
    assert OnnxSession(small.path, threads=1).run({"input": splits.x_test[:2]})[0].shape == (2, 10)


def test_activation_importance_on_a_cnn(tmp_path):
    splits = make_splits(16)
    model = build_model(MODELS["mobilenetv2"], tmp_path, 1, 10, 16).eval()
    cfg = PruneStage(type="prune", name="p", importance="activation", ratio=0.5, steps=2, activation_batches=2)
    pruned, _, _ = prune_and_export(tmp_path, model, splits, cfg)
    assert pruned.meta["pruning"]["params_after"] < 0.6 * pruned.meta["pruning"]["params_before"]


def test_iterative_head_pruning_removes_the_share_of_the_original_heads(tmp_path):
    """12 heads at heads_ratio 0.33 lose 4 whether in one step or three (torch-pruning alone applies
    each step's cumulative ratio to the heads left, removing 2 + 3 + 3)."""
    splits = make_splits(16)
    model = build_model(ModelSpec(arch="vit", options={"dim": 96, "depth": 1, "heads": 12}), tmp_path, 1, 10, 16)
    cfg = PruneStage(type="prune", name="p", ratio=0.3, heads_ratio=0.33, steps=3)
    pruned, _, _ = prune_and_export(tmp_path, model.eval(), splits, cfg)
    assert pruned.meta["pruning"]["heads"] == [[12, 8]]
