"""Attention layers the pruner knows how to shrink by whole heads.

Each adapter names the query/key/value projections and rewrites the head count and head size
after pruning, so the pruned model still runs and exports. Supported: the zoo's ViT attention,
Hugging Face BERT-style self-attention (MiniLM, BERT, RoBERTa, ...) and attention with q_proj/k_proj/
v_proj and a head size (DETR self- and cross-attention, Deformable DETR self-attention).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class AttentionAdapter:
    matches: Callable[[nn.Module], bool]
    projections: Callable[[nn.Module], list[nn.Linear]]  # query, key, value
    heads: Callable[[nn.Module], int]
    set_heads: Callable[[nn.Module, int], None]


def _zoo_set(m, heads: int) -> None:
    m.num_heads, m.head_dim = heads, m.q.out_features // heads


def _bert_set(m, heads: int) -> None:
    m.num_attention_heads = heads
    m.attention_head_size = m.query.out_features // heads
    m.all_head_size = m.query.out_features


def _proj_heads(m) -> int:
    return getattr(m, "num_heads", None) or m.q_proj.out_features // m.head_dim


def _proj_set(m, heads: int) -> None:
    """DETR-style layers reshape to (-1, head_dim), so the head count follows the projection width;
    a `num_heads` attribute, where a layer keeps one, is rewritten too."""
    m.head_dim = m.q_proj.out_features // heads
    if hasattr(m, "num_heads"):
        m.num_heads = heads


ADAPTERS = [
    AttentionAdapter(
        matches=lambda m: type(m).__name__ == "Attention" and all(hasattr(m, a) for a in ("q", "k", "v", "num_heads")),
        projections=lambda m: [m.q, m.k, m.v],
        heads=lambda m: m.num_heads,
        set_heads=_zoo_set,
    ),
    AttentionAdapter(
        matches=lambda m: all(hasattr(m, a) for a in ("query", "key", "value", "num_attention_heads")),
        projections=lambda m: [m.query, m.key, m.value],
        heads=lambda m: m.num_attention_heads,
        set_heads=_bert_set,
    ),
    AttentionAdapter(
        matches=lambda m: (
            all(hasattr(m, a) for a in ("q_proj", "k_proj", "v_proj", "head_dim"))
            and all(isinstance(getattr(m, a), nn.Linear) for a in ("q_proj", "k_proj", "v_proj"))
        ),
        projections=lambda m: [m.q_proj, m.k_proj, m.v_proj],
        heads=_proj_heads,
        set_heads=_proj_set,
    ),
]


def attention_layers(model: nn.Module) -> list[tuple[nn.Module, AttentionAdapter]]:
    found = []
    for module in model.modules():
        adapter = next((a for a in ADAPTERS if a.matches(module)), None)
        if adapter:
            found.append((module, adapter))
    return found
