"""One training step's share on each rank of a data-parallel run (compress.distributed), through
DistributedDataParallel (https://pytorch.org/docs/stable/notes/ddp.html).

`batch_size` stays the global batch. Every rank draws the same seeded batches and takes its own
slice of each, DDP averages the gradients, so N processes take the same steps over the same
examples, with the same schedule, as one process does; what differs is BatchNorm's statistics
(each rank's slice) and the order of float sums. That is why the process count enters no cache key.
In one process every function here is a pass-through.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from compress import distributed
from compress.errors import first_line


def rank_shares(batches: list[np.ndarray], rank: int, size: int) -> list[tuple[np.ndarray, slice]]:
    """(batch, this rank's rows of it) for every batch the ranks train on. A batch too small to give
    each rank two examples (BatchNorm cannot train on one) is skipped by every rank alike, so all
    ranks take the same number of steps, on disjoint rows that together cover the epoch."""
    return [(idx, share(len(idx), rank, size)) for idx in batches if len(idx) >= 2 * size]


def share(n: int, rank: int, size: int) -> slice:
    """Rank `rank`'s contiguous part of `n` rows; parts differ by at most one row."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


class Step(nn.Module):
    """The training forward as one module call, which DDP needs to see (a detector trains through
    its `losses`, not its forward)."""

    def __init__(self, model: nn.Module, task) -> None:
        super().__init__()
        self.model, self.task = model, task

    def forward(self, inputs: tuple, labels: torch.Tensor):
        return self.task.train_outputs(self.model, inputs, labels)


def step_module(model: nn.Module, task, device: torch.device) -> nn.Module:
    """`model`'s training forward; under DDP, which also makes every rank start from rank 0's weights."""
    step = Step(model, task)
    if distributed.size() == 1:
        return step
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(step, device_ids=[device.index] if device.type == "cuda" else None)


def average_gradients(params: list[nn.Parameter]) -> None:
    """DDP averages the model's gradients; parameters trained beside it (distillation's projections)
    are averaged here, so they stay the same on every rank."""
    if distributed.size() == 1:
        return
    import torch.distributed as dist

    for param in params:
        if param.grad is not None:
            dist.all_reduce(param.grad)
            param.grad /= distributed.size()


def summed(*values: float) -> list[float]:
    """Each value summed over the ranks (an epoch's loss over every rank's rows)."""
    if distributed.size() == 1:
        return list(values)
    import torch.distributed as dist

    total = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(total)
    return total.tolist()


@contextlib.contextmanager
def aborting() -> Iterator[None]:
    """Around data-parallel training: a failure on one rank leaves the others in a collective that
    never completes, so it ends the run instead of being recorded as one stage's failure."""
    try:
        yield
    except Exception as exc:
        if distributed.size() == 1:
            raise
        raise distributed.TrainingAborted(
            f"rank {distributed.rank()} failed while training: {first_line(exc)}",
            hint="a failure during data-parallel training ends the run; run again to resume from the last epoch",
        ) from exc
