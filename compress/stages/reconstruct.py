"""Least-squares reconstruction of the layers that lost inputs to width pruning (`prune reconstruct`).

A Linear layer y = W x + b whose input channels were removed keeps only the columns K of W, so
its output loses W[:, ~K] x[~K]. On real inputs the kept channels often carry much of what the
removed ones did; refitting the kept weights (and the bias) to the unpruned layer's outputs,

    [W', b'] = argmin E|| W x + b - (W' x_K + b') ||^2 = [W, b] G[:, K'] G[K', K']^-1,

with G the second moment of [x, 1] over real examples (padding excluded) and K' = K plus the bias
term, takes that back in closed form (Kwon et al. 2022; Nova et al. 2023). Each layer is fitted
to the inputs it had before this pruning step, independently of the others. Convolutions are left
as pruned.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from compress.stages.activation import InputMoments

DAMPING = 0.01  # ridge term, as a share of the mean diagonal of G[K', K']: keeps the solve well posed


class AugmentedMoments(InputMoments):
    """Sums of [x, 1][x, 1]^T over the real rows of each Linear layer's input, in float64."""

    def _hook(self, module: nn.Module, inputs: tuple) -> None:
        x = self.rows(module, inputs[0]).double()
        x = torch.cat([x, x.new_ones(len(x), 1)], 1)
        self.sums[module] = self.sums.get(module, 0) + x.T @ x
        self.counts[module] = self.counts.get(module, 0) + len(x)


class Reconstruction:
    """Records what one pruning step removes from each Linear layer, then refits the layers that
    lost inputs. Use: collect (before the step), record (each group, before it is pruned), apply."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
        self.moments = AugmentedMoments()
        self.before: dict[nn.Module, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self.kept: dict[nn.Module, list[list[int]]] = {}

    def collect(self, model: nn.Module, task, batches: list[np.ndarray]) -> None:
        self.moments.collect(model, task, batches, layers=self.layers)
        self.before = {m: (m.weight.detach().double().clone(), None if m.bias is None else m.bias.detach().double().clone())
                       for m in self.layers}  # fmt: skip
        self.kept = {m: [list(range(m.out_features)), list(range(m.in_features))] for m in self.layers}

    def record(self, group, tp) -> None:
        """Note the rows (outputs) and columns (inputs) the group is about to remove."""
        sides = {tp.prune_linear_out_channels: 0, tp.prune_linear_in_channels: 1}
        for dep, idxs in group:
            side = sides.get(dep.pruning_fn)
            if side is not None and dep.target.module in self.kept:
                gone = set(int(i) for i in idxs)
                kept = self.kept[dep.target.module]
                kept[side] = [k for i, k in enumerate(kept[side]) if i not in gone]

    @torch.no_grad()
    def apply(self) -> dict[str, float | int]:
        """Refit every layer that lost inputs; the relative output error before and after, summed
        over those layers (what each would add to its output's mean square)."""
        lost, naive, fitted, total = 0, 0.0, 0.0, 0.0
        for layer in self.layers:
            rows, cols = self.kept[layer]
            if len(cols) == self.before[layer][0].shape[1] or layer not in self.moments.sums:
                continue
            weight, bias = self.before[layer]
            gram = self.moments.sums[layer] / max(self.moments.counts[layer], 1)
            full = weight[rows] if bias is None else torch.cat([weight[rows], bias[rows, None]], 1)
            keep = cols if bias is None else [*cols, weight.shape[1]]
            if bias is None:
                gram = gram[:-1, :-1]
            new = solve(full, gram, keep)
            total += float(torch.einsum("oi,ij,oj->", full, gram, full))
            naive += error(full, gram, keep, full[:, keep])
            fitted += error(full, gram, keep, new)
            layer.weight.copy_(new[:, : len(cols)].to(layer.weight.dtype))
            if bias is not None:
                layer.bias.copy_(new[:, -1].to(layer.bias.dtype))
            lost += 1
        return {"layers": lost, "error_before": round(naive / total, 5) if total else 0.0,
                "error_after": round(fitted / total, 5) if total else 0.0}  # fmt: skip


def solve(full: torch.Tensor, gram: torch.Tensor, keep: list[int]) -> torch.Tensor:
    """[W, b] G[:, K'] (G[K', K'] + damping)^-1: the kept weights that best reproduce `full`."""
    inner = gram[keep][:, keep]
    inner = inner + DAMPING * inner.diagonal().mean() * torch.eye(len(keep), dtype=inner.dtype)
    return torch.linalg.solve(inner, (full @ gram[:, keep]).T).T


def error(full: torch.Tensor, gram: torch.Tensor, keep: list[int], new: torch.Tensor) -> float:
    """E||full [x, 1] - new [x_K, 1]||^2 for inputs with second moment `gram`."""
    delta = full.clone()
    delta[:, keep] -= new
    return float(torch.einsum("oi,ij,oj->", delta, gram, delta))
