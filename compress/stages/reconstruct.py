"""Least-squares reconstruction of the layers that lost inputs to width pruning (`prune reconstruct`).

A Linear layer y = W x + b whose input channels were removed keeps only the columns K of W, so
its output loses W[:, ~K] x[~K]. On real inputs the kept channels often carry much of what the
removed ones did; refitting the kept weights (and the bias) to the unpruned layer's outputs,

    [W', b'] = argmin E|| W x + b - (W' x_K + b') ||^2 = [W, b] G[:, K'] G[K', K']^-1,

with G the second moment of [x, 1] over real examples (padding excluded) and K' = K plus the bias
term, takes that back in closed form (the layer-wise reconstruction of Kwon et al., 2022). Each
layer is fitted to the inputs it had before this pruning step, independently of the others.
Convolutions are left as pruned.
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

    def __init__(self, layers: list[nn.Linear]) -> None:
        self.layers = layers
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
        errors = [self.refit(layer) for layer in self.layers
                  if len(self.kept[layer][1]) < self.before[layer][0].shape[1] and layer in self.moments.sums]  # fmt: skip
        naive, fitted, total = (sum(e[i] for e in errors) for i in range(3))
        return {"layers": len(errors), "error_before": round(naive / total, 5) if total else 0.0,
                "error_after": round(fitted / total, 5) if total else 0.0}  # fmt: skip

    def refit(self, layer: nn.Linear) -> tuple[float, float, float]:
        """Write the refitted weights; the output error without and with the refit, and the output's size."""
        rows, cols = self.kept[layer]
        weight, bias = self.before[layer]
        gram = self.moments.sums[layer] / max(self.moments.counts[layer], 1)
        if bias is None:
            full, keep, gram = weight[rows], cols, gram[:-1, :-1]
        else:
            full, keep = torch.cat([weight[rows], bias[rows, None]], 1), [*cols, weight.shape[1]]
        new = solve(full, gram, keep)
        layer.weight.copy_(new[:, : len(cols)].to(layer.weight.dtype))
        if bias is not None:
            layer.bias.copy_(new[:, -1].to(layer.bias.dtype))
        size = float(torch.einsum("oi,ij,oj->", full, gram, full))
        return error(full, gram, keep, full[:, keep]), error(full, gram, keep, new), size


def readers(tp, pruner) -> list[nn.Linear]:
    """The Linear layers whose inputs a step of `pruner` may remove (each needs a Gram matrix)."""
    found = {}
    for group in pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                          root_module_types=pruner.root_module_types):  # fmt: skip
        for dep, _ in group:
            if dep.pruning_fn == tp.prune_linear_in_channels and isinstance(dep.target.module, nn.Linear):
                found[id(dep.target.module)] = dep.target.module
    return list(found.values())


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
