"""The training loop shared by `train`, `finetune` and QAT: AdamW or SGD, a cosine schedule, and
best-on-val selection. `finetune` adds distillation terms through `loss_fn`."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from compress import distributed
from compress.artifact import Artifact, Kind, save_torch
from compress.errors import StageError
from compress.models import count_params
from compress.progress import progress_bar
from compress.stages import StageContext, checkpoint, parallel
from compress.stages.augment import Augment, augment
from compress.stages.augment import resolve as resolve_augment
from compress.stages.device import autocast, effective_amp, grad_scaler, model_device, moved, resolve
from compress.stages.loader import Reader
from compress.stages.options import TrainingOptions
from compress.yamlconfig import suggest

# (model outputs, batch indices into the training split, labels, the augmented inputs the model saw
# or None when the batch is the split's rows unchanged) -> loss
LossFn = Callable[[torch.Tensor, np.ndarray, torch.Tensor, tuple | None], torch.Tensor]


def fit(model: nn.Module, cfg: TrainingOptions, ctx: StageContext, label: str, loss_fn: LossFn | None = None,
        extra_params: list[nn.Parameter] = ()) -> list[dict]:  # fmt: skip
    """Train `model` (see train_model), its `cfg.freeze` modules held fixed and its dropout set by
    `cfg.dropout`; `loss_fn` is distillation's (compress.stages.distillation), when it distils."""
    with frozen(model, cfg, ctx, label), dropout_set(model, cfg, loss_fn is not None, ctx, label):
        return train_model(model, cfg, ctx, label, loss_fn, extra_params)


@contextlib.contextmanager
def frozen(model: nn.Module, cfg: TrainingOptions, ctx: StageContext, label: str):
    """Hold the parameters of the modules `cfg.freeze` names (by module name or class) fixed while
    training; they train again afterwards, so a later stage fine-tunes the saved model as usual."""
    names = token_tables(model) if cfg.freeze == "auto" else cfg.freeze
    modules = list(model.named_modules())
    missing = [f for f in names if not any(matches(n, m, f) for n, m in modules)]
    if missing:
        known = [n for n, _ in modules[1:]]
        raise StageError(f"freeze: no module named or of class {missing}{suggest(missing[0], known)}",
                         hint=f"module names look like: {', '.join(known[:5])}, ...; classes: Embedding, LayerNorm")  # fmt: skip
    held = [m for n, m in modules if any(matches(n, m, f) for f in names)]
    params = list({id(p): p for m in held for p in m.parameters() if p.requires_grad}.values())
    if params:
        ctx.log(f"{label}: holding {sum(p.numel() for p in params):,} parameters fixed ({', '.join(names)})")
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@contextlib.contextmanager
def dropout_set(model: nn.Module, cfg: TrainingOptions, distilling: bool, ctx: StageContext, label: str):
    """Give every dropout layer `cfg.dropout`'s probability while training, restored afterwards. auto
    turns dropout off while distilling: the student chases the teacher's exact outputs, and the noise
    only slows it (all-MiniLM-L6-v2's pruned student gained about a point of cosine on held-out text
    in the same 8 epochs, and a step took a quarter less time on a CPU, where masks are slow to draw)."""
    p = (0.0 if distilling else None) if cfg.dropout == "auto" else cfg.dropout
    layers = dropout_layers(model) if p is not None else []
    changed = [(m, attr, getattr(m, attr)) for m, attr in layers if getattr(m, attr) != p]
    if changed:
        own = ", ".join(f"{v:g}" for v in sorted({v for *_, v in changed}))
        ctx.log(f"{label}: dropout {p:g} while training, in {len(changed)} layer(s) (the model's own: {own})")
    for module, attr, _ in changed:
        setattr(module, attr, p)
    try:
        yield
    finally:
        for module, attr, value in changed:
            setattr(module, attr, value)


DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def dropout_layers(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """Where a model keeps its dropout probabilities: dropout modules' `p`, and the attention layers
    that hold theirs as a number (nn.MultiheadAttention and its split form)."""
    from compress.models.mha import SplitMultiheadAttention

    found = []
    for module in model.modules():
        if isinstance(module, DROPOUT):
            found.append((module, "p"))
        elif isinstance(module, (nn.MultiheadAttention, SplitMultiheadAttention)):
            found.append((module, "dropout"))
    return found


def token_tables(model: nn.Module) -> list[str]:
    """The names of a text model's token tables (each Hugging Face model's input embeddings)."""
    names = {id(m): n for n, m in model.named_modules()}
    found = set()
    for module in model.modules():
        try:
            table = module.get_input_embeddings() if hasattr(module, "get_input_embeddings") else None
        except NotImplementedError:  # a Hugging Face model without token inputs (e.g. a detector)
            continue
        if isinstance(table, nn.Embedding) and id(table) in names:
            found.add(names[id(table)])
    return sorted(found)


def matches(name: str, module: nn.Module, held: str) -> bool:
    return name == held or name.startswith(held + ".") or type(module).__name__ == held


def train_model(model: nn.Module, cfg: TrainingOptions, ctx: StageContext, label: str, loss_fn: LossFn | None = None,
                extra_params: list[nn.Parameter] = ()) -> list[dict]:  # fmt: skip
    """Train `model` in place on `cfg.device` and load the weights of its best validation epoch; the
    model ends on the CPU. Each epoch is checkpointed into `ctx.checkpoints`, and a checkpoint found
    there is resumed from (see compress.stages.checkpoint). Under torchrun every rank trains its
    share of each batch (compress.stages.parallel); rank 0 alone evaluates and checkpoints, and the
    other ranks end with ShareDone once the epochs are done."""
    torch.manual_seed(ctx.seed)
    torch.set_num_threads(distributed.threads())
    device = training_device(cfg)
    cfg = cfg.model_copy(update={"amp": effective_amp(device, cfg.amp)})
    model.to(device)
    extra_params = list(extra_params)
    splits, task = ctx.splits, ctx.task
    optimizer = make_optimizer(cfg, [*(p for p in model.parameters() if p.requires_grad), *extra_params])
    schedule = make_schedule(cfg, optimizer, cfg.epochs * math.ceil(len(splits.x_train) / cfg.batch_size))
    scaler = grad_scaler(device, cfg.amp)
    loss_fn = loss_fn or (lambda out, idx, labels, seen: task.loss(out, labels, cfg.label_smoothing))
    augmentation = augmentation_for(cfg, ctx)
    rng = np.random.default_rng(ctx.seed)
    loop = (model, extra_params, optimizer, schedule, scaler, rng)
    start, best_acc, best_state, history = resume(ctx, label, cfg.epochs, loop)
    ranks = f" with {distributed.size()} processes" if distributed.size() > 1 else ""
    read = Reader(splits.x_train, splits.y_train, ctx.workers)  # workers start with the first epoch
    ctx.log(f"{label}: training on {device}{ranks}" + (f" with {cfg.amp} autocast" if cfg.amp else "")
            + (f", augmenting ({describe(augmentation)})" if augmentation else "")
            + (f", reading batches in {ctx.workers} worker processes" if read.loader is not None else ""))  # fmt: skip
    with (progress_bar(label, cfg.epochs, ctx.show_progress, done=start) as advance, parallel.aborting(),
          read):  # fmt: skip
        step = parallel.step_module(model, task, torch.device(device))
        for epoch in range(start, cfg.epochs):
            loss = train_epoch(step, task, read, cfg, optimizer, schedule, loss_fn, rng, scaler, augmentation,
                               extra_params)  # fmt: skip
            if not distributed.leader():
                continue
            acc = evaluate(model, task, splits.x_val, splits.y_val)
            history.append({"epoch": epoch + 1, "loss": round(loss, 5), "val_accuracy": round(acc, 3)})
            if acc > best_acc:
                best_acc, best_state = acc, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            if ctx.checkpoints and epoch + 1 < cfg.epochs:
                checkpoint.save(ctx.checkpoints, checkpoint.state(epoch + 1, *loop, (best_acc, best_state), history))
            advance(f"loss {loss:.3f} val {acc:.1f}%")
    if not distributed.leader():
        raise distributed.ShareDone
    model.cpu().load_state_dict(best_state)
    model.eval()
    ctx.log(f"{label}: best validation accuracy {best_acc:.2f}% after {cfg.epochs} epochs")
    return history


def training_device(cfg: TrainingOptions) -> str:
    """The torch device `cfg.device` stands for on this machine (auto: CUDA when present); under
    torchrun, a rank trains on CUDA device LOCAL_RANK."""
    device = resolve(cfg.device)
    return f"cuda:{distributed.local_rank()}" if distributed.size() > 1 and device.startswith("cuda") else device


def resume(ctx: StageContext, label: str, epochs: int, loop: tuple) -> tuple[int, float, dict | None, list[dict]]:
    """(first epoch to run, best accuracy, best weights, history): from the stage's checkpoint when
    an interrupted run left one, else a fresh start."""
    saved = checkpoint.load(ctx.checkpoints)
    if saved is None or not 0 < saved["epoch"] < epochs:
        return 0, -1.0, None, []
    checkpoint.restore(saved, *loop)
    ctx.log(f"{label}: resumed from epoch {saved['epoch']} of {epochs} (checkpoint in {ctx.checkpoints.name})")
    return saved["epoch"], saved["best_acc"], saved["best_state"], saved["history"]


def save_trained(model: nn.Module, cfg, artifact: Artifact, ctx: StageContext, history: list[dict], **meta) -> Artifact:
    file = save_torch(model.cpu(), ctx.workdir)
    best = max(h["val_accuracy"] for h in history)
    meta = {**artifact.meta, "params": count_params(model), "val_accuracy": best, "history": history,
            "training_device": training_device(cfg),
            "training_amp": effective_amp(training_device(cfg), cfg.amp), **processes(), **meta}  # fmt: skip
    return Artifact(Kind.TORCH, file, lineage=[*artifact.lineage, cfg.name], meta=meta)


def processes() -> dict:
    """How many processes trained, for an artifact's metadata (a data-parallel run only)."""
    return {"training_processes": distributed.size()} if distributed.size() > 1 else {}


def make_optimizer(cfg: TrainingOptions, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        kind, settings = torch.optim.SGD, {"momentum": cfg.momentum, "nesterov": True}
    else:
        kind, settings = torch.optim.AdamW, {}
    # The fused kernel updates every parameter in one pass, the per-parameter loop's arithmetic at
    # a fraction of its time on a CPU (8 % of a MiniLM distillation step); a device without one
    # takes the loop.
    try:
        return kind(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True, **settings)
    except (RuntimeError, ValueError):
        return kind(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **settings)


def make_schedule(cfg: TrainingOptions, optimizer: torch.optim.Optimizer, steps: int):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    if cfg.schedule == "onecycle":  # momentum is left as the optimizer has it (AdamW's betas, SGD's momentum)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=max(steps, 1),
                                                   pct_start=0.3, cycle_momentum=False)  # fmt: skip
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)


def augmentation_for(cfg: TrainingOptions, ctx: StageContext) -> Augment | None:
    try:
        return resolve_augment(cfg.augment, ctx.augment, ctx.task.augmentable)
    except ValueError as exc:
        raise StageError(str(exc), hint="augment shifts, crops and flips images; it has no meaning here") from None


def describe(augmentation: Augment) -> str:
    return ", ".join(f"{k} {v}" for k, v in augmentation.model_dump().items() if v)


def train_epoch(step: nn.Module, task, read: Reader, cfg: TrainingOptions, optimizer, schedule, loss_fn: LossFn, rng,
                scaler, augmentation: Augment | None = None, extra_params: list[nn.Parameter] = ()) -> float:  # fmt: skip
    """One pass over the training split (read through `read`) with `step`
    (compress.stages.parallel.step_module); the mean loss over every rank's examples."""
    step.train()
    device = model_device(step)
    total, count = 0.0, 0
    drawn = batches(task.lengths(read.x), len(read.x), cfg.batch_size, rng)
    shares = list(parallel.rank_shares(drawn, distributed.rank(), distributed.size()))
    rows_read = read([idx[rows] for idx, rows in shares])
    for (idx, rows), (x, y) in zip(shares, rows_read, strict=True):
        mine = idx[rows]
        inputs, labels = moved(task.inputs(task.trim(x)), device), torch.from_numpy(y).to(device)
        seen = None
        if augmentation:
            inputs = seen = (augment(inputs[0], augmentation, rng, rows, len(idx)), *inputs[1:])
        optimizer.zero_grad(set_to_none=True)
        with autocast(device.type, cfg.amp):
            loss = loss_fn(step(inputs, labels), mine, labels, seen)
        scaler.scale(loss).backward()
        parallel.average_gradients(extra_params)
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        total, count = total + loss.item() * len(mine), count + len(mine)
    total, count = parallel.summed(total, count)
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
