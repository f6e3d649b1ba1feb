"""Attention layers the pruner finds, and how it shrinks them by whole heads.

Each adapter names the projections that write the heads (query/key/value, or one fused qkv Linear)
and rewrites the head count and head size after pruning, so the pruned model still runs and exports.
Known layouts: the zoo's ViT, timm's `Attention` (fused qkv), Hugging Face BERT-style and ViT/DeiT
self-attention, q_proj/k_proj/v_proj with a head size (DETR, Hugging Face ViT in transformers 5) and
torchvision's `nn.MultiheadAttention` (rewritten as separate q/k/v Linears when heads are pruned, see
compress.models.mha). A recipe describes any other layout (`prune.attention`).
An attention layer that cannot lose heads is still found, kept whole, and reported with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

from compress.models.mha import SplitMultiheadAttention

if TYPE_CHECKING:
    from compress.stages.prune import AttentionSpec


@dataclass(frozen=True)
class AttentionAdapter:
    layout: str  # what the report calls it
    matches: Callable[[nn.Module], bool]
    projections: Callable[[nn.Module], list[nn.Module]]  # query, key, value, or the fused qkv
    heads: Callable[[nn.Module], int]
    set_heads: Callable[[nn.Module, int], None]
    whole: str | None = None  # why its heads are never pruned; None when they can be

    @property
    def fused(self) -> bool:
        return "fused" in self.layout

    def width(self, module: nn.Module) -> int:
        """The residual width the layer reads."""
        if isinstance(module, nn.MultiheadAttention):
            return module.embed_dim
        return self.projections(module)[0].in_features


@dataclass(frozen=True)
class Found:
    """An attention layer in a model: its name, its adapter, and whether heads may be pruned."""

    name: str
    module: nn.Module
    adapter: AttentionAdapter

    @property
    def prunable(self) -> bool:
        return self.adapter.whole is None


def _zoo_set(m, heads: int) -> None:
    m.num_heads, m.head_dim = heads, m.q.out_features // heads


def _bert_set(m, heads: int) -> None:
    m.num_attention_heads = heads
    m.attention_head_size = m.query.out_features // heads
    m.all_head_size = m.query.out_features


def _timm_set(m, heads: int) -> None:
    """timm reshapes qkv to (3, num_heads, head_dim) and the output to attn_dim: all three follow."""
    m.num_heads, m.head_dim = heads, m.qkv.out_features // (3 * heads)
    if hasattr(m, "attn_dim"):
        m.attn_dim = heads * m.head_dim


def _proj_heads(m) -> int:
    count = getattr(m, "num_heads", None) or getattr(m, "num_attention_heads", None)
    return count or m.q_proj.out_features // m.head_dim


def _proj_set(m, heads: int) -> None:
    """DETR-style and transformers-5 ViT layers reshape to (-1, head_dim), so the head count follows the
    projection width; a `num_heads` / `num_attention_heads` attribute, where a layer keeps one, is rewritten too."""
    m.head_dim = m.q_proj.out_features // heads
    for attribute in ("num_heads", "num_attention_heads"):
        if hasattr(m, attribute):
            setattr(m, attribute, heads)


def _has_linear(m, *names: str) -> bool:
    return all(isinstance(getattr(m, a, None), nn.Linear) for a in names)


ADAPTERS = [
    AttentionAdapter(
        layout="nn.MultiheadAttention, split into q/k/v",
        matches=lambda m: isinstance(m, SplitMultiheadAttention),
        projections=lambda m: [m.q_proj, m.k_proj, m.v_proj],
        heads=lambda m: m.num_heads,
        set_heads=_proj_set,
    ),
    AttentionAdapter(
        layout="q/k/v (zoo ViT)",
        matches=lambda m: type(m).__name__ == "Attention" and all(hasattr(m, a) for a in ("q", "k", "v", "num_heads")),
        projections=lambda m: [m.q, m.k, m.v],
        heads=lambda m: m.num_heads,
        set_heads=_zoo_set,
    ),
    AttentionAdapter(
        layout="fused qkv (timm)",
        matches=lambda m: _has_linear(m, "qkv", "proj") and all(hasattr(m, a) for a in ("num_heads", "head_dim")),
        projections=lambda m: [m.qkv],
        heads=lambda m: m.num_heads,
        set_heads=_timm_set,
    ),
    AttentionAdapter(
        layout="query/key/value (Hugging Face)",
        matches=lambda m: all(hasattr(m, a) for a in ("query", "key", "value", "num_attention_heads")),
        projections=lambda m: [m.query, m.key, m.value],
        heads=lambda m: m.num_attention_heads,
        set_heads=_bert_set,
    ),
    AttentionAdapter(
        layout="q_proj/k_proj/v_proj",
        matches=lambda m: hasattr(m, "head_dim") and _has_linear(m, "q_proj", "k_proj", "v_proj"),
        projections=lambda m: [m.q_proj, m.k_proj, m.v_proj],
        heads=_proj_heads,
        set_heads=_proj_set,
    ),
    AttentionAdapter(
        layout="nn.MultiheadAttention",
        matches=lambda m: isinstance(m, nn.MultiheadAttention),
        projections=lambda m: [],
        heads=lambda m: m.num_heads,
        set_heads=lambda m, heads: None,
        whole="nn.MultiheadAttention ties its heads to the residual width, and is split into prunable heads only "
        "when heads_ratio is set and it has no bias_k/bias_v or add_zero_attn; its MLP and, with embedding: true, "
        "its width are pruned instead",
    ),
]

UNKNOWN_FUSED = AttentionAdapter(
    layout="fused qkv (unknown)",
    matches=lambda m: False,
    projections=lambda m: [unknown_qkv(m)],
    heads=lambda m: 0,
    set_heads=lambda m, heads: None,
    whole="a fused qkv Linear whose head count is unknown; describe the layer under the prune stage's `attention:` "
    "to prune its heads",
)


def unknown_qkv(module: nn.Module) -> nn.Linear | None:
    """A Linear child named like a fused qkv projection (3 x its input width out), in a layer no adapter knows."""
    for name, child in module.named_children():
        if isinstance(child, nn.Linear) and "qkv" in name.lower() and child.out_features == 3 * child.in_features:
            return child
    return None


def described(spec: AttentionSpec) -> AttentionAdapter:
    """An adapter for a layout a recipe describes: class name, projection attributes, head-count attribute."""
    names = [spec.qkv] if spec.qkv else [spec.q, spec.k, spec.v]
    per_head = 3 if spec.qkv else 1

    def set_heads(m, heads: int) -> None:
        head_dim = getattr(m, names[0]).out_features // (per_head * heads)
        setattr(m, spec.heads, heads)
        if spec.head_dim:
            setattr(m, spec.head_dim, head_dim)

    return AttentionAdapter(
        layout=f"{'fused qkv' if spec.qkv else 'q/k/v'} (described: {spec.module})",
        matches=lambda m: type(m).__name__ == spec.module,
        projections=lambda m: [getattr(m, n) for n in names],
        heads=lambda m: int(getattr(m, spec.heads)),
        set_heads=set_heads,
    )


def attention_layers(model: nn.Module, specs: list[AttentionSpec] = ()) -> list[Found]:
    """Every attention layer in `model`: described layouts first, then the known ones, then fused qkv
    Linears in layers no adapter knows (kept whole, so pruning around them cannot break their reshape)."""
    adapters = [described(s) for s in specs] + ADAPTERS
    found = []
    for name, module in model.named_modules():
        adapter = next((a for a in adapters if a.matches(module)), None)
        if adapter is None and unknown_qkv(module) is not None:
            adapter = UNKNOWN_FUSED
        if adapter:
            found.append(Found(name, module, adapter))
    return found


def check_described(model: nn.Module, specs: list[AttentionSpec]) -> list[str]:
    """Problems with the recipe's attention descriptions against the model, one sentence each."""
    problems = []
    classes = {type(m).__name__: m for m in model.modules()}
    for spec in specs:
        module = classes.get(spec.module)
        if module is None:
            sample = ", ".join(sorted({c for c in classes if "att" in c.lower()}) or list(classes)[:6])
            problems.append(f"attention module '{spec.module}' is no class in the model (classes like: {sample})")
            continue
        for field in ("qkv", "q", "k", "v"):
            attribute = getattr(spec, field)
            if attribute and not isinstance(getattr(module, attribute, None), nn.Linear):
                children = ", ".join(n for n, c in module.named_children() if isinstance(c, nn.Linear))
                problems.append(f"{spec.module}.{attribute} ({field}) is not an nn.Linear (its Linears: {children})")
        for field in ("heads", "head_dim"):
            attribute = getattr(spec, field)
            if attribute and not isinstance(getattr(module, attribute, None), int):
                problems.append(f"{spec.module}.{attribute} ({field}) is not an integer attribute")
    return problems
