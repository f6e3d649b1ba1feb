"""The training loop shared by `train`, `finetune` and QAT: AdamW or SGD, a cosine schedule, and
best-on-val selection. `finetune` adds distillation terms through `loss_fn`."""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from compress.artifact import Artifact, Kind, save_torch
from compress.models import count_params
from compress.progress import progress_bar
from compress.stages import StageContext
from compress.stages.options import TrainingOptions

# (model outputs, batch indices into the training split, labels) -> loss
LossFn = Callable[[torch.Tensor, np.ndarray, torch.Tensor], torch.Tensor]


def fit(model: nn.Module, cfg: TrainingOptions, ctx: StageContext, label: str, loss_fn: LossFn | None = None,
        extra_params: list[nn.Parameter] = ()) -> list[dict]:  # fmt: skip
    """Train `model` in place and load the weights of its best validation epoch."""
    torch.manual_seed(ctx.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    splits = ctx.splits
    optimizer = make_optimizer(cfg, [*model.parameters(), *extra_params])
    schedule = make_schedule(cfg, optimizer, cfg.epochs * math.ceil(len(splits.x_train) / cfg.batch_size))
    task = ctx.task
    loss_fn = loss_fn or (lambda out, idx, labels: task.loss(out, labels, cfg.label_smoothing))
    rng = np.random.default_rng(ctx.seed)
    best_acc, best_state, history = -1.0, None, []
    with progress_bar(label, cfg.epochs, ctx.show_progress) as advance:
        for epoch in range(cfg.epochs):
            loss = train_epoch(model, task, splits.x_train, splits.y_train, cfg, optimizer, schedule, loss_fn, rng)
            acc = evaluate(model, task, splits.x_val, splits.y_val)
            history.append({"epoch": epoch + 1, "loss": round(loss, 5), "val_accuracy": round(acc, 3)})
            if acc > best_acc:
                best_acc, best_state = acc, copy.deepcopy(model.state_dict())
            advance(f"loss {loss:.3f} val {acc:.1f}%")
    model.load_state_dict(best_state)
    model.eval()
    ctx.log(f"{label}: best validation accuracy {best_acc:.2f}% after {cfg.epochs} epochs")
    return history


def save_trained(model: nn.Module, cfg, artifact: Artifact, ctx: StageContext, history: list[dict], **meta) -> Artifact:
    file = save_torch(model, ctx.workdir)
    best = max(h["val_accuracy"] for h in history)
    meta = {**artifact.meta, "params": count_params(model), "val_accuracy": best, "history": history, **meta}
    return Artifact(Kind.TORCH, file, lineage=[*artifact.lineage, cfg.name], meta=meta)


def make_optimizer(cfg: TrainingOptions, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_schedule(cfg: TrainingOptions, optimizer: torch.optim.Optimizer, steps: int):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)


def autocast(enabled: bool):
    """bfloat16 autocast on the CPU when asked for and supported; a no-op otherwise."""
    if enabled and torch.backends.mkldnn.is_available():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_epoch(model, task, x, y, cfg: TrainingOptions, optimizer, schedule, loss_fn: LossFn, rng) -> float:
    model.train()
    total, count = 0.0, 0
    for idx in batches(task.lengths(x), len(x), cfg.batch_size, rng):
        if len(idx) < 2:  # BatchNorm cannot train on a single example
            continue
        inputs, labels = task.inputs(task.trim(x[idx])), torch.from_numpy(y[idx])
        optimizer.zero_grad(set_to_none=True)
        with autocast(cfg.amp):
            loss = loss_fn(task.train_outputs(model, inputs, labels), idx, labels)
        loss.backward()
        optimizer.step()
        schedule.step()
        total, count = total + loss.item() * len(idx), count + len(idx)
    return total / max(count, 1)


def batches(lengths: np.ndarray | None, n: int, size: int, rng, window: int = 50) -> list[np.ndarray]:
    """Shuffled batches of indices. With lengths (text), each run of `window` batches is sorted by
    length before it is cut, so a batch holds sentences of similar length and trimming its padding
    (Task.trim) leaves little; the batches are then shuffled again."""
    order = rng.permutation(n)
    if lengths is not None:
        runs = [order[i : i + size * window] for i in range(0, n, size * window)]
        order = np.concatenate([run[np.argsort(lengths[run], kind="stable")] for run in runs])
    cut = [order[i : i + size] for i in range(0, n, size)]
    return cut if lengths is None else [cut[i] for i in rng.permutation(len(cut))]


@torch.no_grad()
def evaluate(model: nn.Module, task, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """The task metric of the PyTorch module (used only to pick the best epoch, never for reports)."""
    return task.score(task.predict(model.eval(), x, batch_size), y)
