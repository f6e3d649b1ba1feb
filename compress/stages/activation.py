"""Activation importance for `prune`: rank channels and attention heads by what they add to the
output on real data, not by their weights alone.

A channel j read by a layer with weights W contributes x_j W[:, j] to that layer's output; its
expected squared size is E[x_j^2] |W[:, j]|^2 (Wanda, Sun et al. 2023, per channel instead of
per weight). A head contributes W_h x_h, whose expected squared size tr(W_h E[x_h x_h^T] W_h^T)
needs the covariance of the head's inputs. The statistics come from training batches, over real
tokens only, and are taken afresh before every pruning step.

Unlike Taylor importance this also works right before distillation, when the student is still the
teacher and the distillation loss and its gradients are zero.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from compress.stages.device import model_device, moved


class InputMoments:
    """Second moments of the inputs of Linear and Conv2d layers, gathered by forward hooks.

    `full` layers (those reading attention heads) keep the whole covariance, the others its
    diagonal. Token inputs (N, L, D) count only the positions the attention mask keeps.
    """

    def __init__(self) -> None:
        self.full: set[nn.Module] = set()
        self.sums, self.counts, self.mask = {}, {}, None

    def rows(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The layer's input as one row per example, pixel or real token."""
        x = x.detach().float()
        if isinstance(module, nn.Conv2d):
            x = x.transpose(0, 1).flatten(1).T  # one row per pixel
        elif x.dim() == 3 and self.mask is not None and self.mask.shape == x.shape[:2]:
            x = x[self.mask]
        return x.reshape(-1, x.shape[-1])

    def _hook(self, module: nn.Module, inputs: tuple) -> None:
        x = self.rows(module, inputs[0])
        moment = x.T @ x if module in self.full else (x * x).sum(0)
        self.sums[module] = self.sums.get(module, 0) + moment
        self.counts[module] = self.counts.get(module, 0) + len(x)

    def collect(self, model: nn.Module, task, batches: list[np.ndarray], layers: list[nn.Module] | None = None) -> None:
        """Replace the statistics with those of `model` (in eval mode) on `batches`, for `layers`
        (default: every Linear and Conv2d)."""
        self.sums.clear()
        self.counts.clear()
        if layers is None:
            layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        handles = [m.register_forward_pre_hook(self._hook) for m in layers]
        try:
            device = model_device(model)
            with torch.no_grad():
                for x in batches:
                    inputs = moved(task.inputs(task.trim(x)), device)
                    self.mask = inputs[1].bool() if len(inputs) > 1 else None
                    model.eval()(*inputs)
        finally:
            self.mask = None
            for handle in handles:
                handle.remove()

    def channel_scores(self, layer: nn.Module, heads: int | None) -> torch.Tensor:
        """Expected squared contribution of each input channel (of each head, repeated per channel)."""
        moment = self.sums[layer] / max(self.counts[layer], 1)
        if isinstance(layer, nn.Conv2d):
            return _conv_scores(layer, moment)
        weight = layer.weight.detach().float()
        if layer not in self.full or not heads:
            return (moment.diagonal() if moment.dim() == 2 else moment) * (weight * weight).sum(0)
        size = weight.shape[1] // heads
        blocks = [slice(h * size, (h + 1) * size) for h in range(heads)]
        per_head = [torch.einsum("oi,ij,oj->", weight[:, b], moment[b, b], weight[:, b]) for b in blocks]
        return torch.stack(per_head).repeat_interleave(size)


def _conv_scores(layer: nn.Conv2d, moment: torch.Tensor) -> torch.Tensor:
    """Per input channel of a convolution: E[x_c^2] times the squared norm of the filters reading c."""
    weight = layer.weight.detach().float()  # (out, in / groups, kh, kw)
    norms = (weight * weight).sum((2, 3))
    if layer.groups == 1:
        return moment * norms.sum(0)
    if layer.groups == layer.in_channels == layer.out_channels:  # depthwise: one filter per channel
        return moment * norms.reshape(-1)
    return moment  # other grouped convolutions: the activations alone


def head_readers(pruner, tp, heads: dict[nn.Module, int]) -> set[nn.Module]:
    """The layers that read each attention's heads (the output projection), from the dependency graph."""
    readers = set()
    for layer in heads:
        group = pruner.DG.get_pruning_group(layer, tp.prune_linear_out_channels, idxs=[0])
        readers |= {dep.layer for dep, _ in group if dep.pruning_fn == tp.prune_linear_in_channels}
    return readers


def activation_importance(tp, moments: InputMoments, heads: dict[nn.Module, int]):
    """A torch-pruning importance from `moments`; `heads` is the pruner's live head-count map."""

    class ActivationImportance(tp.importance.Importance):
        def __init__(self) -> None:
            self.moments = moments

        @torch.no_grad()
        def __call__(self, group):
            count = next((heads[dep.layer] for dep, _ in group if dep.layer in heads), None)
            scores = None
            readers = (tp.prune_linear_in_channels, tp.prune_conv_in_channels)
            for item in group:
                dep, idxs = item.dep, item.idxs
                if dep.pruning_fn not in readers or dep.layer not in moments.sums or None in item.root_idxs:
                    continue
                local = moments.channel_scores(dep.layer, count)[idxs]
                scores = torch.zeros(len(group[0].idxs)) if scores is None else scores
                scores.scatter_add_(0, torch.tensor(item.root_idxs), local)
            return scores

    return ActivationImportance()
