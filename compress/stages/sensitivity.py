"""Sensitivity-aware ratios for `prune` with `scope: sensitivity`.

Each dependency group is pruned alone, on a copy of the model, at a few ratios around the recipe's:
half of it, the ratio itself, and halfway to 1. The loss increase on fixed training batches and the
MACs removed (or, with `sensitivity_cost: latency`, the time saved by the layers it shrinks, from
a per-layer profile) make one table per group. Ratios are then chosen per group at the least summed
loss increase, so that the pruned model saves at least what uniform pruning at the recipe's ratio
saves (checked on copies): insensitive and cheap-to-cut groups are pruned harder, sensitive ones
less or not at all.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compress.stages import StageContext
from compress.stages.prune import PruneStage


@dataclass(frozen=True)
class Probe:
    ratio: float
    loss: float  # loss increase over the unpruned model on the probe batches
    saved: float  # MACs removed, or ms under sensitivity_cost: latency


GRID = 0.05  # the outer probe ratios lie on this grid, so stages at nearby ratios share probes


def levels(ratio: float) -> tuple[float, ...]:
    """Half the ratio and halfway to 1 (on the grid), and the ratio itself."""

    def snap(r: float) -> float:
        return round(round(r / GRID) * GRID, 4)

    return tuple(sorted({snap(ratio / 2), round(ratio, 4), snap(min(0.95, (1 + ratio) / 2))}))


def group_roots(pruner, model: nn.Module) -> list[str]:
    """Names of the modules that lead each prunable channel group (attention groups lose heads, not
    width, so they are left to heads_ratio)."""
    names = {m: n for n, m in model.named_modules()}
    roots = []
    for group in pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                          root_module_types=pruner.root_module_types):  # fmt: skip
        root = group[0].dep.target.module
        if root in names and not pruner._is_atten_group(group)[0] and names[root] not in roots:
            roots.append(names[root])
    return roots


def mean_loss(model: nn.Module, ctx: StageContext, batches: list[np.ndarray]) -> float:
    task, x, y = ctx.task, ctx.splits.x_train, ctx.splits.y_train
    total = 0.0
    with torch.no_grad():
        for idx in batches:
            labels = torch.from_numpy(y[idx])
            total += float(task.loss(task.train_outputs(model, task.inputs(task.trim(x[idx])), labels), labels))
    return total / len(batches)


class Prober:
    """Prunes copies of one model, with given per-group ratios or uniformly at the recipe's ratio,
    and says what each copy lost (loss on fixed training batches) and what it saved (MACs, or ms
    with `sensitivity_cost: latency`)."""

    def __init__(self, tp, model, example, cfg: PruneStage, ignored, attention, ctx: StageContext, batches,
                 memo: Path | None = None):  # fmt: skip
        from compress.stages.pruning import make_pruner

        self.memo_path = memo
        self.memo: dict = json.loads(memo.read_text(encoding="utf-8")) if memo and memo.is_file() else {}
        self.reused = 0
        self.tp, self.model, self.example, self.ignored, self.attention = tp, model.eval(), example, ignored, attention
        self.cfg = cfg.model_copy(update={"heads_ratio": None, "steps": 1, "scope": "uniform"})
        self.ctx, self.batches = ctx, batches
        self.base_loss = mean_loss(model, ctx, batches)
        self.base_macs, self.base_params = tp.utils.count_ops_and_params(model, example)
        self.roots = group_roots(make_pruner(tp, model, example, self.cfg, ignored, attention, ratios={}), model)
        self.times = self.measure_times() if cfg.sensitivity_cost == "latency" else None

    def measure_times(self) -> dict[str, float] | None:
        from compress.stages.layer_times import layer_times

        # One profile per model, kept with the probes: every stage pruning it weighs the same times.
        times = self.memo.setdefault("layer_ms", None) or layer_times(self.model, self.ctx)
        self.memo["layer_ms"] = times
        if not times:
            self.ctx.log(f"{self.cfg.name}: no layer of the profile matched a module; weighing by MACs instead")
            return None
        self.weights = {n: m.weight.numel() for n, m in self.model.named_modules() if n in times}
        slowest = sorted(times, key=times.get, reverse=True)[:3]
        self.ctx.log(f"{self.cfg.name}: {sum(times.values()):.3f} ms in {len(times)} weighted layers (ONNX Runtime, "
                     f"1 thread); slowest: " + ", ".join(f"{n} {times[n]:.3f}" for n in slowest))  # fmt: skip
        return times

    def saved(self, work: nn.Module) -> float:
        """MACs removed, or under `latency` the ms saved: each layer's measured time times the share
        of its weights (so of its MACs) pruned away."""
        if self.times is None:
            return self.base_macs - self.tp.utils.count_ops_and_params(work, self.example)[0]
        modules = dict(work.named_modules())
        return sum(ms * (1 - modules[n].weight.numel() / self.weights[n]) for n, ms in self.times.items())

    def prune(self, ratios: dict[str, float] | None) -> tuple[float, float]:
        """(loss increase, saving) of a copy pruned to `ratios` (uniformly where None), measured
        once per model and kept in the memo."""
        key = (
            f"uniform {self.cfg.ratio}"
            if ratios is None
            else json.dumps(sorted((n, r) for n, r in ratios.items() if r))
        )
        probes = self.memo.setdefault("probes", {})
        if key in probes:
            self.reused += 1
            return tuple(probes[key])
        probes[key] = self.measure(ratios)
        return tuple(probes[key])

    def save(self) -> None:
        if self.reused:
            self.ctx.log(f"{self.cfg.name}: {self.reused} pruned copies measured before were reused")
        if self.memo_path:
            tmp = self.memo_path.with_name(f".{self.memo_path.name}.{os.getpid()}")
            tmp.write_text(json.dumps(self.memo), encoding="utf-8")
            os.replace(tmp, self.memo_path)

    def measure(self, ratios: dict[str, float] | None) -> list[float]:
        from compress.stages.pruning import make_pruner, prune_steps

        work, ignored, attention = copy.deepcopy((self.model, self.ignored, self.attention))
        pruner = make_pruner(self.tp, work, self.example, self.cfg, ignored, attention, ratios=ratios)
        prune_steps(self.cfg, pruner, work, self.example, self.base_macs, self.base_params, self.ctx)
        return [mean_loss(work, self.ctx, self.batches) - self.base_loss, self.saved(work)]

    def table(self, ratio: float) -> dict[str, list[Probe]]:
        """{group: [Probe per level]}, each group pruned alone."""
        return {name: [Probe(level, *self.prune({name: level})) for level in levels(ratio)] for name in self.roots}


def choose(prober: Prober, ratio: float) -> tuple[dict[str, float], dict[str, list[Probe]]]:
    """Per-group ratios saving as much as uniform pruning at `ratio` does, measured on copies:
    the per-group table predicts removals additively, which overestimates what neighbouring groups
    pruned together remove, so the allocation's budget is scaled until the real removal matches."""
    table = prober.table(ratio)
    target = prober.prune(None)[1]
    low, high = 0.1, 1.0
    if prober.prune(allocate(table, ratio, high))[1] < target:
        high = 1.5
    for _ in range(6):
        mid = (low + high) / 2
        low, high = (mid, high) if prober.prune(allocate(table, ratio, mid))[1] < target else (low, mid)
    return allocate(table, ratio, high), table


def allocate(table: dict[str, list[Probe]], ratio: float, scale: float = 1.0) -> dict[str, float]:
    """A ratio per group (0 = left whole) saving at least `scale` x what `ratio` saves
    from every group alone, at the least summed loss increase: the Lagrangian choice per group, then
    steps back from any group whose lower ratio still meets the budget."""
    budget = scale * sum(p.saved for probes in table.values() for p in probes if p.ratio == round(ratio, 4))
    options = {g: [Probe(0.0, 0.0, 0.0), *probes] for g, probes in table.items()}

    def pick(weight: float) -> dict[str, Probe]:
        return {g: min(opts, key=lambda p: (p.loss - weight * p.saved, p.ratio)) for g, opts in options.items()}

    def removed(choice: dict[str, Probe]) -> float:
        return sum(p.saved for p in choice.values())

    high = 1e-12
    while removed(pick(high)) < budget and high < 1e12:
        high *= 4
    low = 0.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if removed(pick(mid)) < budget else (low, mid)
    choice = step_back(pick(high), options, budget)
    return {g: p.ratio for g, p in choice.items()}


def step_back(choice: dict[str, Probe], options: dict[str, list[Probe]], budget: float) -> dict[str, Probe]:
    """Lower one group's ratio at a time while the budget still holds: the largest loss saving first,
    and among equal ones the smallest give-back (groups that cost nothing are not pruned past it)."""
    while True:
        total = sum(p.saved for p in choice.values())
        moves = [(choice[g].loss - lower.loss, lower.saved - choice[g].saved, g, lower) for g, opts in options.items()
                 for lower in opts if lower.ratio < choice[g].ratio
                 and total - choice[g].saved + lower.saved >= budget]  # fmt: skip
        best = max(moves, default=None, key=lambda m: m[:2])
        if best is None or best[0] < 0:
            return choice
        choice = {**choice, best[2]: best[3]}


def describe(table: dict[str, list[Probe]], ratios: dict[str, float]) -> list[str]:
    """One log line per group: its chosen ratio and the loss increase at each probed ratio."""
    return [f"{name}: ratio {ratios[name]:.2f} (loss +" +
            ", +".join(f"{p.loss:.3f} at {p.ratio:.2f}" for p in probes) + ")"
            for name, probes in table.items()]  # fmt: skip
