"""`prune`: structured channel pruning with torch-pruning's dependency graph (DepGraph).

Coupled layers (a convolution, its BatchNorm, the next layer's inputs, residual additions) are
pruned together, so the result is a smaller dense network that exports and runs anywhere. The
goal is a channel ratio, or a MACs / parameter reduction reached in small iterative steps.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from compress.artifact import Artifact, load_torch, save_torch
from compress.errors import StageError
from compress.recipe import PruneStage
from compress.selection import matches
from compress.stages import StageContext


def run(cfg: PruneStage, artifact: Artifact, ctx: StageContext) -> Artifact:
    import torch_pruning as tp

    model = load_torch(artifact).eval()
    example = torch.from_numpy(ctx.splits.x_train[:1])
    base_macs, base_params = tp.utils.count_ops_and_params(model, example)
    ignored = ignored_layers(model, cfg, ctx.splits.num_classes)
    pruner = make_pruner(tp, model, example, cfg, ignored)
    steps = prune_steps(cfg, pruner, model, example, base_macs, base_params, ctx)
    macs, params = tp.utils.count_ops_and_params(model, example)
    ctx.log(f"{cfg.name}: {steps} step(s); params {base_params:,} -> {params:,} ({base_params / params:.2f}x), "
            f"MACs {base_macs:,.0f} -> {macs:,.0f} ({base_macs / macs:.2f}x)")  # fmt: skip
    model.zero_grad(set_to_none=True)
    file = save_torch(model, ctx.workdir)
    meta = {**artifact.meta, "params": int(params), "macs": int(macs), "pruning": {
        "importance": cfg.importance, "scope": cfg.scope, "round_to": cfg.round_to, "steps": steps,
        "params_before": int(base_params), "params_after": int(params),
        "macs_before": int(base_macs), "macs_after": int(macs)}}  # fmt: skip
    meta.pop("history", None)
    return Artifact("torch", file, lineage=[*artifact.lineage, cfg.name], meta=meta)


def classifier_layers(model: nn.Module, num_classes: int) -> list[nn.Module]:
    """The output layer(s): their output width is the class count and must not shrink."""
    last = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    heads = [m for m in last if getattr(m, "out_features", getattr(m, "out_channels", None)) == num_classes]
    return heads[-1:] or last[-1:]


def ignored_layers(model: nn.Module, cfg: PruneStage, num_classes: int) -> list[nn.Module]:
    chosen = [m for name, m in model.named_modules() if name and matches(name, type(m).__name__, cfg.ignore)]
    unused = [
        p for p in cfg.ignore if not any(matches(n, type(m).__name__, [p]) for n, m in model.named_modules() if n)
    ]
    if unused:
        sample = ", ".join(n for n, _ in list(model.named_modules())[1:6])
        raise StageError(f"ignore pattern(s) {unused} match no module in the model",
                         hint=f"module names look like: {sample}; class names and re: patterns work too")  # fmt: skip
    return [*chosen, *classifier_layers(model, num_classes)]


def make_importance(tp, cfg: PruneStage):
    if cfg.importance == "taylor":
        return tp.importance.GroupTaylorImportance()
    if cfg.importance == "bn_scale":
        return tp.importance.BNScaleImportance()
    return tp.importance.GroupMagnitudeImportance(p=1 if cfg.importance == "l1" else 2)


def rounded_pruner_class(tp):
    """MetaPruner whose `round_to` keeps the *nearest* multiple of channels, never fewer than one.

    torch-pruning 1.6 rounds the kept channels down; when that reaches zero the whole group is
    silently left unpruned (32 channels at ratio 0.85 with round_to 8 stayed 32), so a higher
    ratio could give a bigger, slower model.
    """

    class RoundedPruner(tp.pruner.MetaPruner):
        def _round_to(self, n_pruned: int, current_channels: int, round_to: int) -> int:
            if current_channels <= round_to:
                return 0
            keep = max(round_to, round((current_channels - n_pruned) / round_to) * round_to)
            return max(current_channels - keep, 0)

    return RoundedPruner


def make_pruner(tp, model, example, cfg: PruneStage, ignored: list[nn.Module]):
    by_ratio = cfg.ratio is not None
    return rounded_pruner_class(tp)(
        model, example, make_importance(tp, cfg),
        pruning_ratio=cfg.ratio if by_ratio else 0.95,
        iterative_steps=cfg.steps if by_ratio else cfg.max_steps,
        global_pruning=cfg.scope == "global", ignored_layers=ignored,
        round_to=cfg.round_to if cfg.round_to and cfg.round_to > 1 else None,
    )  # fmt: skip


def prune_steps(cfg: PruneStage, pruner, model, example, base_macs, base_params, ctx: StageContext) -> int:
    """Step the pruner to the ratio, or until the MACs / parameter target is met."""
    import torch_pruning as tp

    total = cfg.steps if cfg.ratio is not None else cfg.max_steps
    for step in range(1, total + 1):
        if cfg.importance == "taylor":
            accumulate_gradients(model, cfg, ctx)
        pruner.step()
        if cfg.ratio is None:
            macs, params = tp.utils.count_ops_and_params(model, example)
            if (cfg.macs_reduction and base_macs / macs >= cfg.macs_reduction) or (
                cfg.params_reduction and base_params / params >= cfg.params_reduction
            ):
                return step
    if cfg.ratio is None:
        raise StageError(f"stage '{cfg.name}' could not reach the reduction target in {total} steps",
                         hint="lower macs_reduction / params_reduction, or ignore fewer layers")  # fmt: skip
    return total


def accumulate_gradients(model: nn.Module, cfg: PruneStage, ctx: StageContext) -> None:
    """Taylor importance needs gradients of the task loss; a few training batches suffice."""
    model.zero_grad(set_to_none=True)
    model.eval()  # keep BatchNorm statistics fixed while measuring sensitivity
    rng = np.random.default_rng(ctx.seed)
    x, y = ctx.splits.x_train, ctx.splits.y_train
    for _ in range(cfg.taylor_batches):
        idx = rng.choice(len(x), min(64, len(x)), replace=False)
        loss = nn.functional.cross_entropy(model(torch.from_numpy(x[idx])), torch.from_numpy(y[idx]))
        loss.backward()
