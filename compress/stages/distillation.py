"""Knowledge distillation into a student during training (used by `finetune` and QAT).

Logit distillation follows Hinton et al. (2015): KL divergence between softened distributions at
temperature T, scaled by T^2, mixed with cross-entropy by `alpha`. Feature distillation follows
FitNets (Romero et al., 2015): MSE between named layers, through a learned 1x1 projection when the
student's width differs. Teacher logits on the training split are computed once and cached; an
augmented batch (compress.stages.augment) is run through the teacher as the student saw it.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from compress import distributed
from compress.artifact import Artifact, load_torch
from compress.errors import StageError
from compress.stages import StageContext, teacher_states
from compress.stages.device import effective_amp, model_device, moved
from compress.stages.options import Distill, TrainingOptions


@contextlib.contextmanager
def distillation(cfg: Distill, opts: TrainingOptions, student: nn.Module, ctx: StageContext, device: str = "cpu"):
    """Yield (loss function, extra trainable parameters) for distilling into `student` while training
    with `opts`; the teacher, the student and the projections go to `device`, where the training runs."""
    teacher_artifact = ctx.refs[cfg.teacher]
    teacher = load_torch(teacher_artifact).eval().to(device)
    student.to(device)
    logits = teacher_logits(teacher, teacher_artifact, ctx) if ctx.task.logit_distillation else None
    pairs = chosen_pairs(cfg, student, teacher, ctx)
    student_taps = FeatureTaps(student, [s for s, _ in pairs])
    teacher_taps = FeatureTaps(teacher, [t for _, t in pairs])
    try:
        projections = make_projections(student, teacher, student_taps, teacher_taps, ctx).to(device)
        stored = stored_states(teacher, teacher_taps, opts, ctx, device)
        loss = distill_loss(cfg, opts.label_smoothing, logits, teacher, student_taps, teacher_taps, projections, ctx,
                            stored)  # fmt: skip
        yield loss, list(projections.parameters())
    finally:
        student_taps.remove()
        teacher_taps.remove()


def stored_states(teacher: nn.Module, taps: FeatureTaps, opts: TrainingOptions, ctx: StageContext,
                  device: str) -> teacher_states.TeacherStates | None:  # fmt: skip
    """The teacher's token states on the training split, computed once, where that pays and fits."""
    x = ctx.splits.x_train
    widths = [_width(taps.outputs[n]) for n in taps.names]
    if not taps.names or not teacher_states.wanted(ctx.task, x, widths, opts.epochs):
        return None
    stored = teacher_states.compute(teacher, taps, ctx.task, x, device, effective_amp(device, opts.amp))
    ctx.log(
        f"distill: the teacher's token states on the training split computed once ({stored.nbytes / 2**30:.2f} GiB)"
    )
    return stored


def chosen_pairs(cfg: Distill, student: nn.Module, teacher: nn.Module, ctx: StageContext) -> list[tuple[str, str]]:
    if cfg.features == "auto":
        from compress.stages.feature_pairs import auto_pairs

        pairs = auto_pairs(student, teacher, ctx)
        ctx.log(f"distill: matching features of {', '.join(n for n, _ in pairs)}" if pairs else
                "distill: features auto: the teacher's structure differs from the student's; logits only")  # fmt: skip
        return pairs
    return [(p.student, p.teacher) for p in cfg.features] or default_pairs(student, teacher, ctx)


def default_pairs(student: nn.Module, teacher: nn.Module, ctx: StageContext) -> list[tuple[str, str]]:
    """Without `features:`, tasks that cannot match outputs (detection) match the layers the model
    names for it (e.g. a feature pyramid's outputs), where the teacher has the same layers."""
    if ctx.task.logit_distillation or not hasattr(student, "distill_features"):
        return []
    teacher_names = dict(teacher.named_modules())
    pairs = [(n, n) for n in student.distill_features() if n in teacher_names]
    if not pairs:
        raise StageError("the teacher shares no feature layer with the student to distil",
                         hint="name layer pairs in distill.features, or distil from a teacher of the same family")  # fmt: skip
    ctx.log(f"distill: matching features of {', '.join(n for n, _ in pairs)}")
    return pairs


def teacher_logits(teacher: nn.Module, artifact: Artifact, ctx: StageContext) -> np.ndarray:
    """The teacher's logits on the training split, computed once per (teacher, data) and cached."""
    path = ctx.shared_cache / f"teacher-logits-{artifact.key}.npy"
    if path.is_file():
        ctx.log(f"distill: reusing cached teacher outputs {path.name}")
        return np.load(path)
    out = labels_if_teacher(teacher, ctx) if ctx.task.labels_from_model else None
    out = ctx.task.predict(teacher, ctx.splits.x_train) if out is None else out
    if not distributed.leader():  # only rank 0 writes the cache; the others keep theirs in memory
        return out
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.npy")
    np.save(tmp, out)
    os.replace(tmp, path)
    return out


def labels_if_teacher(teacher: nn.Module, ctx: StageContext, rows: int = 32) -> np.ndarray | None:
    """The training labels, when they are this teacher's outputs (a task labelled by its source model,
    distilled from that model): checked on a few rows instead of running the teacher on all of them."""
    y = ctx.splits.y_train
    if len(y) < rows or not np.allclose(ctx.task.predict(teacher, ctx.splits.x_train[:rows]), y[:rows], atol=1e-4):
        return None
    ctx.log("distill: the training labels are the teacher's outputs; used as they are")
    return np.asarray(y)


class FeatureTaps:
    """Forward hooks that keep the latest output of each named module."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            sample = ", ".join(list(modules)[1:8])
            raise StageError(f"no module named {missing} in the model", hint=f"module names look like: {sample}, ...")
        self.names, self.outputs = names, {}
        self._handles = [modules[n].register_forward_hook(self._keep(n)) for n in names]

    def _keep(self, name: str):
        def hook(module, inputs, output):
            # Transformer layers return tuples; the hidden states come first.
            self.outputs[name] = output[0] if isinstance(output, (tuple, list)) else output

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def make_projections(student, teacher, s_taps: FeatureTaps, t_taps: FeatureTaps, ctx: StageContext) -> nn.ModuleList:
    """A 1x1 convolution (or linear map) per feature pair whose widths differ; identity otherwise."""
    if not s_taps.names:
        return nn.ModuleList()
    sample = moved(ctx.task.inputs(ctx.splits.x_train[:2]), model_device(student))
    with torch.no_grad():
        student.eval()(*sample)
        teacher(*sample)
    projections = nn.ModuleList()
    for s_name, t_name in zip(s_taps.names, t_taps.names, strict=True):
        s_out, t_out = s_taps.outputs[s_name], t_taps.outputs[t_name]
        if s_out.shape[2:] != t_out.shape[2:] or s_out.dim() != t_out.dim():
            raise StageError(f"feature shapes differ: {s_name} {tuple(s_out.shape)} vs {t_name} {tuple(t_out.shape)}",
                             hint="pair layers with the same spatial size / sequence length")  # fmt: skip
        s_width, t_width = _width(s_out), _width(t_out)
        if s_width == t_width:
            projections.append(nn.Identity())
        else:
            projections.append(nn.Conv2d(s_width, t_width, 1) if s_out.dim() == 4 else nn.Linear(s_width, t_width))
    return projections


def _width(feature: torch.Tensor) -> int:
    """Channels of a feature map (N, C, H, W), or the last axis of tokens (N, L, D) and vectors."""
    return feature.shape[1] if feature.dim() == 4 else feature.shape[-1]


def distill_loss(cfg: Distill, smoothing: float, logits: np.ndarray, teacher, s_taps, t_taps, projections, ctx,
                 stored: teacher_states.TeacherStates | None = None):  # fmt: skip
    task, x = ctx.task, ctx.splits.x_train

    def loss(out: torch.Tensor, idx: np.ndarray, labels: torch.Tensor, seen: tuple | None) -> torch.Tensor:
        # An augmented batch is new to the teacher: it runs on what the student saw (logits and features).
        live, batch = None, task.trim(x[idx]) if s_taps.names else None  # the rows, read once
        if seen is not None and (logits is not None or s_taps.names):
            with torch.no_grad():
                live = teacher(*seen)
        elif s_taps.names and stored is None:
            with torch.no_grad():
                teacher(*moved(task.inputs(batch), out.device))
        if logits is None:  # features only: the task loss keeps its full weight
            total = task.loss(out, labels, smoothing)
        else:
            target = live.float() if live is not None else torch.from_numpy(logits[idx]).to(out.device)
            kd = task.distill_loss(out, target, cfg.temperature)
            total = cfg.alpha * kd + (1 - cfg.alpha) * task.loss(out, labels, smoothing)
        mask = token_mask(task, batch, out.device) if batch is not None else None
        targets = (stored.batch(idx, mask) if stored is not None and seen is None
                   else [t_taps.outputs[n] for n in t_taps.names])  # fmt: skip
        for proj, s_name, target in zip(projections, s_taps.names, targets, strict=True):
            total = total + cfg.feature_weight * feature_loss(proj(s_taps.outputs[s_name]), target, mask)
        return total

    return loss


def token_mask(task, batch: np.ndarray, device) -> torch.Tensor | None:
    """Text: the (trimmed) batch's attention mask, so padding is not matched."""
    if task.lengths(batch) is None:
        return None
    return torch.from_numpy(np.ascontiguousarray(batch[:, 1])).to(device)


def feature_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared difference, over the real tokens only when token features come with their mask."""
    if mask is None or student.dim() != 3 or student.shape[:2] != mask.shape:
        return F.mse_loss(student, teacher)
    keep = mask.to(student.dtype).unsqueeze(-1)
    return ((student - teacher) ** 2 * keep).sum() / (keep.sum() * student.shape[-1]).clamp(min=1)
