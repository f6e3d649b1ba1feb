"""`distill.features: auto`: the layers whose outputs a student matches in its teacher when both
share one structure (a pruned student and the model it was pruned from, blocks removed by depth
pruning included: a kept block pairs with the teacher's block it was).

The candidates are the containers (blocks, stages) that have the same name and class in both
models and whose outputs are feature maps or token sequences of the same spatial size or length.
Layers inside another candidate are left out. For a CNN the pairs are the last block at each
resolution (up to `MAX_PAIRS`, the deepest kept); where the resolution never changes (a
Transformer) they are blocks spread evenly over the depth, the last included.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.stages import StageContext
from compress.stages.device import model_device, moved

MAX_PAIRS = 4


def teacher_names(student: nn.Module, teacher: nn.Module) -> dict[str, str] | None:
    """Each student module's name in the teacher it was pruned from (blocks removed by depth pruning
    shift the indices of those after them); None when the two are not one structure."""
    origin = getattr(student, "block_origin", None)
    # The teacher's own blocks, by their index in the unpruned model (it may be depth-pruned too).
    teacher_kept = getattr(teacher, "block_origin", {}).get("kept")

    def renamed(name: str) -> str:
        if not origin or not name.startswith(origin["stack"] + "."):
            return name
        index, _, rest = name[len(origin["stack"]) + 1 :].partition(".")
        block = origin["kept"][int(index)]
        if teacher_kept is not None:
            block = teacher_kept.index(block) if block in teacher_kept else "missing"
        return ".".join(filter(None, [origin["stack"], str(block), rest]))

    kinds = {n: type(m) for n, m in teacher.named_modules()}
    mapping = {n: renamed(n) for n, _ in student.named_modules()}
    same = all(kinds.get(mapping[n]) is type(m) for n, m in student.named_modules())
    return mapping if same and (origin or len(kinds) == len(mapping)) else None


def feature_outputs(model: nn.Module, names: list[str], ctx: StageContext) -> list[tuple[str, torch.Tensor]]:
    """(name, output) of each named module in the order the modules finish on one batch."""
    modules, seen = dict(model.named_modules()), []
    hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: seen.append((n, o))) for n in names]
    try:
        with torch.no_grad():
            model.eval()(*moved(ctx.task.inputs(ctx.task.trim(ctx.splits.x_train[:2])), model_device(model)))
    finally:
        for h in hooks:
            h.remove()
    return [(n, o[0] if isinstance(o, (tuple, list)) else o) for n, o in seen]


def auto_pairs(student: nn.Module, teacher: nn.Module, ctx: StageContext) -> list[tuple[str, str]]:
    """Feature pairs (student name, teacher name) for a student shaped like its teacher; [] otherwise."""
    mapping = teacher_names(student, teacher)
    if mapping is None:
        return []
    modules = dict(student.named_modules())
    containers = [n for n, m in modules.items() if n and any(True for _ in m.children())]
    t_out = dict(feature_outputs(teacher, [mapping[n] for n in containers], ctx))
    usable: list[tuple[str, tuple]] = []
    index: dict[int, int] = {}  # a tensor several nested modules return is named once (see `plain`)
    for name, mine in feature_outputs(student, containers, ctx):
        out = t_out.get(mapping[name])
        if not (torch.is_tensor(out) and torch.is_tensor(mine) and out.dim() >= 3 and mine.dim() == out.dim()):
            continue
        spatial = (out.shape[2:], mine.shape[2:]) if out.dim() == 4 else (out.shape[:-1], mine.shape[:-1])
        if spatial[0] != spatial[1]:
            continue
        size = tuple(out.shape[2:]) if out.dim() == 4 else ()
        if id(mine) in index:
            if not plain(modules[name]):
                usable[index[id(mine)]] = (name, size)
        else:
            index[id(mine)] = len(usable)
            usable.append((name, size))
    outermost = [(n, size) for n, size in usable if not any(n.startswith(m + ".") for m, _ in usable)]
    return [(n, mapping[n]) for n in pick(outermost, modules)]


def plain(module: nn.Module) -> bool:
    """A bare Sequential or ModuleList: its output is its last block's, which names it better."""
    return type(module) in (nn.Sequential, nn.ModuleList)


def pick(usable: list[tuple[str, tuple]], modules: dict[str, nn.Module]) -> list[str]:
    """The last block to finish at each resolution; or, where the resolution is one, blocks of a
    list spread evenly over the depth, the last included."""
    if not usable:
        return []
    ends = [n for i, (n, size) in enumerate(usable) if all(size != s for _, s in usable[i + 1 :])]
    if len(ends) > 1:
        return ends[-MAX_PAIRS:]
    blocks = [n for n, _ in usable if isinstance(modules.get(n.rpartition(".")[0]), (nn.ModuleList, nn.Sequential))]
    blocks = blocks or [n for n, _ in usable]
    step = max(1, len(blocks) // MAX_PAIRS)
    return blocks[::-1][::step][:MAX_PAIRS][::-1]
