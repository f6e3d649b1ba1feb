"""nn.MultiheadAttention rewritten with separate q/k/v Linears, so its heads can be pruned.

nn.MultiheadAttention derives its head size from `embed_dim`, the residual width it reads and writes:
dropping a head would mean narrowing the whole residual stream. This layer computes the same function
from `q_proj`, `k_proj`, `v_proj` and `out_proj` Linears whose inner width is free, so the pruner can
remove whole heads and keep the residual width. It accepts nn.MultiheadAttention's call signature, so
the model around it (torchvision's ViT, a user's encoder) runs unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class SplitMultiheadAttention(nn.Module):
    """Attention with free inner width: num_heads x head_dim need not equal the input width."""

    def __init__(self, q: nn.Linear, k: nn.Linear, v: nn.Linear, out: nn.Linear, num_heads: int,
                 batch_first: bool, dropout: float) -> None:  # fmt: skip
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = q, k, v, out
        self.num_heads, self.head_dim = num_heads, q.out_features // num_heads
        self.batch_first, self.dropout = batch_first, dropout

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention) -> SplitMultiheadAttention:
        """The same layer with the same weights, as separate Linears."""
        dim = mha.embed_dim
        if mha._qkv_same_embed_dim:
            weights = mha.in_proj_weight.detach().split(dim)
        else:
            weights = (mha.q_proj_weight.detach(), mha.k_proj_weight.detach(), mha.v_proj_weight.detach())
        biases = mha.in_proj_bias.detach().split(dim) if mha.in_proj_bias is not None else (None,) * 3
        projections = [_linear(w, b) for w, b in zip(weights, biases, strict=True)]
        out = _linear(mha.out_proj.weight.detach(), None if mha.out_proj.bias is None else mha.out_proj.bias.detach())
        return cls(*projections, out, mha.num_heads, mha.batch_first, mha.dropout)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        b, n, s = query.shape[0], query.shape[1], key.shape[1]
        q = self.q_proj(query).reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(key).reshape(b, s, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(value).reshape(b, s, self.num_heads, self.head_dim).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) * self.head_dim**-0.5
        scores = _masked(scores, attn_mask, key_padding_mask, is_causal)
        attn = torch.softmax(scores, dim=-1)
        if self.training and self.dropout:
            attn = nn.functional.dropout(attn, self.dropout)
        out = self.out_proj((attn @ v).transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))
        if not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        return out, attn.mean(1) if average_attn_weights else attn


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def _masked(scores: torch.Tensor, attn_mask, key_padding_mask, is_causal: bool) -> torch.Tensor:
    """Apply nn.MultiheadAttention's masks: boolean True (or -inf) hides a key. A per-head 3-D mask
    would no longer match once heads are pruned, so only (L, S) masks are taken."""
    if is_causal and attn_mask is None:
        n, s = scores.shape[-2:]
        attn_mask = torch.ones(n, s, dtype=torch.bool, device=scores.device).triu(1)
    if attn_mask is not None:
        if attn_mask.dim() != 2:
            raise ValueError("a split attention layer takes a 2-D attn_mask (L, S), not a per-head mask")
        scores = _add_mask(scores, attn_mask)
    if key_padding_mask is not None:
        scores = _add_mask(scores, key_padding_mask[:, None, None, :])
    return scores


def _add_mask(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return scores.masked_fill(mask, float("-inf"))
    return scores + mask


def convertible(mha: nn.MultiheadAttention) -> bool:
    """Layers with extra key/value biases or zero attention have no split equivalent here."""
    return mha.bias_k is None and mha.bias_v is None and not mha.add_zero_attn


def split_multihead(model: nn.Module) -> list[str]:
    """Replace every convertible nn.MultiheadAttention in `model` in place; the names replaced."""
    replaced = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.MultiheadAttention) and convertible(module):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            split = SplitMultiheadAttention.from_mha(module).train(module.training)
            setattr(parent, child, split)
            replaced.append(name)
    return replaced
