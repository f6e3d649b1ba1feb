"""Depth pruning for `prune blocks_ratio`: whole Transformer blocks taken out of the model's stack.

Width pruning leaves every layer's fixed costs (normalisation, softmax, the residual additions, and
the runtime's per-op overhead, which dominates small models), so it cannot make a model that is
mostly overhead much faster; removing blocks does. Blocks go one at a time, each time the one whose
absence raises the training loss least on fixed training batches, measured on the model as it is
then (greedy, so the choice accounts for the blocks already gone).
"""

from __future__ import annotations

from torch import nn

from compress.errors import StageError
from compress.models.attention import Found
from compress.stages import StageContext


def block_stack(model: nn.Module, attention: list[Found]) -> str | None:
    """The name of the ModuleList / Sequential whose every entry holds one of the attention layers
    (the Transformer's blocks); the longest when there are several, None when there is none."""
    holds = {id(f.module) for f in attention}
    stacks = [(len(m), name) for name, m in model.named_modules()
              if isinstance(m, (nn.ModuleList, nn.Sequential)) and len(m) >= 2
              and all(sum(id(x) in holds for x in block.modules()) == 1 for block in m)]  # fmt: skip
    return max(stacks)[1] if stacks else None


def drop_blocks(model: nn.Module, attention: list[Found], ratio: float, ctx: StageContext, batches: list,
                name: str) -> dict:  # fmt: skip
    """Remove round(ratio x blocks) blocks (at least one stays); returns what was measured and removed:
    {"stack", "blocks", "removed": [original index, ...], "loss": [loss with none removed, after each]}."""
    from compress.stages.sensitivity import mean_loss

    stack_name = block_stack(model, attention)
    if stack_name is None:
        raise StageError(f"stage '{name}': blocks_ratio found no stack of Transformer blocks in this model",
                         hint="blocks_ratio needs blocks that each hold an attention layer; leave it unset")  # fmt: skip
    stack = model.get_submodule(stack_name)
    count = min(len(stack) - 1, round(ratio * len(stack)))
    original, loss = list(range(len(stack))), [mean_loss(model, ctx, batches)]
    for _ in range(count):
        losses = [without(stack, i, lambda: mean_loss(model, ctx, batches)) for i in range(len(stack))]
        best = min(range(len(stack)), key=losses.__getitem__)
        del stack[best]
        loss.append(losses[best])
        ctx.log(f"{name}: block {original.pop(best)} of {stack_name} removed, loss {loss[0]:.4f} -> {losses[best]:.4f}")
    set_depth(model, len(stack))
    # Which block of the unpruned model each kept block was (through earlier depth pruning too), for
    # distillation that pairs a student's blocks with its teacher's (compress.stages.feature_pairs).
    before = getattr(model, "block_origin", {"kept": list(range(len(original) + count))})["kept"]
    model.block_origin = {"stack": stack_name, "kept": [before[i] for i in original]}
    return {
        "stack": stack_name,
        "blocks": len(original) + count,
        "removed": sorted(set(range(len(original) + count)) - set(original)),
        "loss": [round(v, 5) for v in loss],
    }


def without(stack: nn.Module, index: int, measure):
    """`measure()` with block `index` taken out of `stack`, which is then put back as it was."""
    block = stack[index]
    del stack[index]
    try:
        return measure()
    finally:
        stack.insert(index, block)


def set_depth(model: nn.Module, blocks: int) -> None:
    """Keep a Hugging Face config's layer count true to the model (code that reads it sizes loops)."""
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "num_hidden_layers"):
            config.num_hidden_layers = blocks
