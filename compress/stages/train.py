"""`train`: supervised training with AdamW or SGD, a cosine schedule, and best-on-val selection."""

from __future__ import annotations

import copy
import math
import os

import numpy as np
import torch
from torch import nn

from compress.artifact import Artifact, load_torch, save_torch
from compress.models import count_params
from compress.progress import progress_bar
from compress.recipe import TrainStage
from compress.stages import StageContext


def run(cfg: TrainStage, artifact: Artifact, ctx: StageContext) -> Artifact:
    torch.manual_seed(ctx.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    model = load_torch(artifact)
    optimizer = make_optimizer(cfg, model)
    steps = cfg.epochs * math.ceil(len(ctx.splits.x_train) / cfg.batch_size)
    schedule = make_schedule(cfg, optimizer, steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    rng = np.random.default_rng(ctx.seed)
    best_acc, best_state, history = -1.0, None, []
    with progress_bar(f"train {cfg.name}", cfg.epochs, ctx.show_progress) as advance:
        for epoch in range(cfg.epochs):
            loss = train_epoch(
                model, ctx.splits.x_train, ctx.splits.y_train, cfg.batch_size, optimizer, schedule, loss_fn, rng
            )
            acc = evaluate(model, ctx.splits.x_val, ctx.splits.y_val)
            history.append({"epoch": epoch + 1, "loss": round(loss, 5), "val_accuracy": round(acc, 3)})
            if acc > best_acc:
                best_acc, best_state = acc, copy.deepcopy(model.state_dict())
            advance(f"loss {loss:.3f} val {acc:.1f}%")
    model.load_state_dict(best_state)
    model.eval()
    ctx.log(f"{cfg.name}: best validation accuracy {best_acc:.2f}% after {cfg.epochs} epochs")
    file = save_torch(model, ctx.workdir)
    meta = {"params": count_params(model), "val_accuracy": best_acc, "history": history}
    return Artifact("torch", file, lineage=[*artifact.lineage, cfg.name], meta=meta)


def make_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True
        )
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_schedule(cfg, optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)


def train_epoch(model, x, y, batch_size, optimizer, schedule, loss_fn, rng) -> float:
    model.train()
    order = rng.permutation(len(x))
    total, count = 0.0, 0
    for start in range(0, len(x), batch_size):
        idx = order[start : start + batch_size]
        if len(idx) < 2:  # BatchNorm cannot train on a single example
            continue
        inputs, labels = torch.from_numpy(x[idx]), torch.from_numpy(y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs), labels)
        loss.backward()
        optimizer.step()
        schedule.step()
        total, count = total + loss.item() * len(idx), count + len(idx)
    return total / max(count, 1)


@torch.no_grad()
def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """Accuracy of the PyTorch module (used only to pick the best epoch, never for reports)."""
    model.eval()
    correct = 0
    for start in range(0, len(x), batch_size):
        logits = model(torch.from_numpy(x[start : start + batch_size]))
        correct += int((logits.argmax(1).numpy() == y[start : start + batch_size]).sum())
    return 100.0 * correct / max(len(x), 1)
