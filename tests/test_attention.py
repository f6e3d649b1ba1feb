"""Head pruning on the attention layouts users' Transformers have: timm's fused qkv, torchvision's
nn.MultiheadAttention, Hugging Face ViT, and a user's own layer described in the recipe."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import compress
from compress.artifact import load_torch
from compress.errors import StageError
from compress.models import build_model
from compress.models.mha import SplitMultiheadAttention, split_multihead
from compress.recipe import ModelSpec
from compress.runtimes.onnxruntime import OnnxSession
from compress.stages.prune import AttentionSpec, PruneStage
from tests.conftest import TINY_TARGET
from tests.test_prune import make_splits, prune_and_export

DESCRIBED = [{"module": "MyAttention", "qkv": "to_qkv", "heads": "n_heads", "head_dim": "dh"}]


class MyAttention(nn.Module):
    """A user's attention: one fused qkv Linear, head count and size under names no library uses."""

    def __init__(self, dim: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads, self.dh = n_heads, dim // n_heads
        self.to_qkv, self.out = nn.Linear(dim, dim * 3), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.to_qkv(x).reshape(b, n, 3, self.n_heads, self.dh).permute(2, 0, 3, 1, 4).unbind(0)
        x = torch.softmax(q @ k.transpose(-2, -1) * self.dh**-0.5, dim=-1) @ v
        return self.out(x.transpose(1, 2).reshape(b, n, self.n_heads * self.dh))


class MySplitAttention(MyAttention):
    """The same layer with separate query, key and value Linears."""

    def __init__(self, dim: int, n_heads: int) -> None:
        super().__init__(dim, n_heads)
        del self.to_qkv
        self.wq, self.wk, self.wv = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (w(x).reshape(b, n, self.n_heads, self.dh).transpose(1, 2) for w in (self.wq, self.wk, self.wv))
        x = torch.softmax(q @ k.transpose(-2, -1) * self.dh**-0.5, dim=-1) @ v
        return self.out(x.transpose(1, 2).reshape(b, n, self.n_heads * self.dh))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, split: bool = False) -> None:
        super().__init__()
        attention = (MySplitAttention if split else MyAttention)(dim, heads)
        self.norm1, self.attn, self.norm2 = nn.LayerNorm(dim), attention, nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 2), nn.GELU(), nn.Linear(dim * 2, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class UserViT(nn.Module):
    """A ViT as users write it: class token and position embedding as bare nn.Parameters."""

    def __init__(self, size: int = 16, channels: int = 1, patch: int = 4, dim: int = 64, heads: int = 4,
                 split: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.patch = nn.Conv2d(channels, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(Block(dim, heads, split), Block(dim, heads, split))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def user_vit(**options) -> UserViT:
    return UserViT(**options)


def test_a_user_vit_with_fused_qkv_and_bare_parameters_prunes_its_mlp(tmp_path):
    splits = make_splits(16)
    cfg = PruneStage(type="prune", name="p", ratio=0.5, heads_ratio=0)
    pruned, _, small = prune_and_export(tmp_path, UserViT().eval(), splits, cfg)
    vit = load_torch(pruned)
    assert [b.mlp[0].out_features for b in vit.blocks] == [64, 64]
    assert vit.blocks[0].attn.to_qkv.out_features == 192 and vit.pos_embed.shape[-1] == 64
    [found] = pruned.meta["pruning"]["attention"]
    assert (found["module"], found["layers"]) == ("MyAttention", 2) and "describe the layer" in found["outcome"]
    assert OnnxSession(small.path, threads=1).run({"input": splits.x_test[:2]})[0].shape == (2, 10)


def test_a_described_attention_loses_whole_heads(tmp_path):
    splits = make_splits(16)
    cfg = PruneStage(type="prune", name="p", ratio=0.5, heads_ratio=0.5, attention=DESCRIBED)
    pruned, _, small = prune_and_export(tmp_path, UserViT().eval(), splits, cfg)
    for block in load_torch(pruned).blocks:
        assert (block.attn.n_heads, block.attn.dh, block.attn.to_qkv.out_features) == (2, 16, 96)
    assert pruned.meta["pruning"]["heads"] == [[4, 2], [4, 2]]
    assert pruned.meta["pruning"]["attention"][0]["outcome"] == "pruned by head, 8 -> 4 heads"
    assert OnnxSession(small.path, threads=1).run({"input": splits.x_test[:2]})[0].shape == (2, 10)


def test_a_described_attention_with_separate_projections_loses_whole_heads(tmp_path):
    splits = make_splits(16)
    described = [{"module": "MySplitAttention", "q": "wq", "k": "wk", "v": "wv", "heads": "n_heads", "head_dim": "dh"}]
    cfg = PruneStage(type="prune", name="p", ratio=0.5, heads_ratio=0.5, attention=described)
    pruned, _, small = prune_and_export(tmp_path, UserViT(split=True).eval(), splits, cfg)
    for block in load_torch(pruned).blocks:
        assert (block.attn.n_heads, block.attn.dh, block.attn.wv.out_features) == (2, 16, 32)
    assert OnnxSession(small.path, threads=1).run({"input": splits.x_test[:2]})[0].shape == (2, 10)


def test_an_attention_description_that_does_not_fit_the_model_is_a_clear_error(tmp_path):
    wrong = [{"module": "MyAttn", "qkv": "qkv", "heads": "n_heads"},
             {"module": "MyAttention", "qkv": "qkv", "heads": "heads"}]  # fmt: skip
    cfg = PruneStage(type="prune", name="p", ratio=0.5, heads_ratio=0.5, attention=wrong)
    with pytest.raises(StageError) as caught:
        prune_and_export(tmp_path, UserViT().eval(), make_splits(16), cfg)
    message = caught.value.message
    assert "'MyAttn' is no class in the model (classes like: MyAttention)" in message
    assert "MyAttention.qkv (qkv) is not an nn.Linear (its Linears: to_qkv, out)" in message
    assert "MyAttention.heads (heads) is not an integer attribute" in message


@pytest.mark.parametrize("fields", [{"qkv": "qkv", "q": "q"}, {"q": "q", "k": "k"}, {}])
def test_an_attention_description_names_one_layout(fields):
    with pytest.raises(ValueError, match="give qkv"):
        AttentionSpec(module="A", heads="h", **fields)


def test_timm_deit_loses_heads_and_still_runs(tmp_path):
    splits = make_splits(32, channels=3)
    model = build_model(ModelSpec(arch="timm:deit_tiny_patch16_224"), tmp_path, 3, 10, 32).eval()
    cfg = PruneStage(type="prune", name="p", ratio=0.5, heads_ratio=0.3)
    pruned, _, small = prune_and_export(tmp_path, model, splits, cfg)
    for block in load_torch(pruned).blocks:
        attn = block.attn
        assert (attn.num_heads, attn.head_dim, attn.attn_dim, attn.qkv.out_features) == (2, 64, 128, 384)
    assert OnnxSession(small.path, threads=1).run({"input": splits.x_test[:2]})[0].shape == (2, 10)


class HfViT(nn.Module):
    """Hugging Face's ViT (ViTAttention with q/k/v projections), returning logits."""

    def __init__(self) -> None:
        super().__init__()
        import transformers

        config = transformers.ViTConfig(image_size=16, patch_size=4, num_channels=1, hidden_size=64,
                                        num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                        num_labels=10)  # fmt: skip
        self.vit = transformers.ViTForImageClassification(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(pixel_values=x).logits


def test_hugging_face_vit_loses_heads(tmp_path):
    pytest.importorskip("transformers")
    splits = make_splits(16)
    cfg = PruneStage(type="prune", name="p", ratio=0.5, heads_ratio=0.5)
    pruned, _, small = prune_and_export(tmp_path, HfViT().eval(), splits, cfg)
    assert pruned.meta["pruning"]["heads"] == [[4, 2], [4, 2]]
    assert OnnxSession(small.path, threads=1).run({"input": splits.x_test[:2]})[0].shape == (2, 10)


RECIPE = """\
name: vit
seed: 0
model: {MODEL}
data: {{source: digits, image_size: {SIZE}, channels: {CHANNELS}}}
stages:
  - type: prune
    ratio: 0.5
    heads_ratio: 0.5
    {ATTENTION}
  - type: finetune
    epochs: 1
    batch_size: 256
    distill: {{temperature: 4.0, alpha: 0.7}}
  - type: export
  - type: quantize
    method: dynamic
targets: [tiny-ort]
"""


def run_recipe(write, tmp_path, model: str, size: int = 32, channels: int = 3, attention: str = "", text=RECIPE):
    write("tiny-ort.yaml", TINY_TARGET)
    recipe = write("vit.yaml", text.format(MODEL=model, SIZE=size, CHANNELS=channels, ATTENTION=attention))
    logged = []
    report = compress.run(recipe, tmp_path / "out", log=logged.append)

    for variant in report.variants:
        assert not variant.errors, variant.errors
        inputs = make_splits(size, channels).x_test[:2]
        assert OnnxSession(tmp_path / "out" / variant.path, threads=1).run({"input": inputs})[0].shape == (2, 10)
    return report, "\n".join(logged)


def test_timm_deit_through_a_recipe(write, tmp_path):
    report, log = run_recipe(write, tmp_path, "{arch: 'timm:deit_tiny_patch16_224'}")
    pruning = report.variants[0].pruning()
    assert pruning.heads == [[3, 1]] * 12 and pruning.params_after < pruning.params_before / 2
    assert [v.precision for v in report.variants] == ["fp32", "int8"]


def test_a_users_own_vit_through_a_recipe(write, tmp_path):
    write("vit.py", "from tests.test_attention import user_vit\n")
    attention = "attention: [{module: MyAttention, qkv: to_qkv, heads: n_heads, head_dim: dh}]"
    report, log = run_recipe(write, tmp_path, "{python: 'vit.py:user_vit', options: {size: 16}}", 16, 1, attention)
    assert report.variants[0].pruning().heads == [[4, 2], [4, 2]]
    said = "attention MyAttention (fused qkv (described: MyAttention)) x2: pruned by head, 8 -> 4 heads"
    assert said in log and said in (tmp_path / "out" / "report.md").read_text()


def test_torchvision_vit_b_16_loses_heads_through_finetune_export_and_int8(write, tmp_path):
    """86 M parameters even at 32 px: one short distillation epoch. Its nn.MultiheadAttention layers are
    split into q/k/v Linears so they lose whole heads while the residual width stays."""
    report, log = run_recipe(write, tmp_path, "{arch: 'torchvision:vit_b_16', options: {image_size: 32}}")
    pruning = report.variants[0].pruning()
    assert pruning.heads == [[12, 6]] * 12 and pruning.params_after < 0.7 * pruning.params_before
    [found] = pruning.attention
    assert (found["module"], found["layers"]) == ("SplitMultiheadAttention", 12)
    assert found["outcome"] == "pruned by head, 144 -> 72 heads"
    assert [v.precision for v in report.variants] == ["fp32", "int8"]


@pytest.mark.parametrize("batch_first", [True, False])
def test_split_multihead_attention_computes_what_nn_multihead_attention_does(batch_first):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4, batch_first=batch_first).eval()
    split = SplitMultiheadAttention.from_mha(mha).eval()
    x = torch.randn(2, 5, 32) if batch_first else torch.randn(5, 2, 32)
    padding = torch.tensor([[False] * 4 + [True], [False] * 5])
    hidden = torch.zeros(5, 5, dtype=torch.bool).triu(1)
    for masks in ({}, {"key_padding_mask": padding}, {"attn_mask": hidden}, {"attn_mask": hidden.float() * -1e4}):
        expected, weights = mha(x, x, x, **masks)
        got, got_weights = split(x, x, x, **masks)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got_weights, weights, atol=1e-5, rtol=1e-5)


def test_split_multihead_attention_leaves_layers_it_cannot_express_alone():
    model = nn.Sequential(nn.MultiheadAttention(16, 2), nn.MultiheadAttention(16, 2, add_bias_kv=True))
    assert split_multihead(model) == ["0"]
    assert isinstance(model[0], SplitMultiheadAttention) and isinstance(model[1], nn.MultiheadAttention)
