"""The teacher's token states on a text training split, computed once and held in memory.

Token-state distillation otherwise runs the teacher on every batch of every epoch: about a third of
a distillation step for a pruned MiniLM. Text is never augmented, so each epoch would recompute the
same states; one pass before training replaces them all. Only the real tokens are kept (fp16, one
flat table per tapped layer), so the memory follows the text's length, not its padding.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from compress import distributed
from compress.stages.device import autocast, moved

MAX_BYTES = 4 << 30  # beyond this the teacher runs live, batch by batch


class TeacherStates:
    """Per tapped layer, the states of every real token of the split, in split order."""

    def __init__(self, tables: list[torch.Tensor], offsets: np.ndarray) -> None:
        self.tables, self.offsets = tables, offsets

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tables)

    def batch(self, idx: np.ndarray, mask: torch.Tensor) -> list[torch.Tensor]:
        """The stored states of rows `idx`, laid out as their (trimmed) batch whose attention mask is
        `mask` (batch, length); zeros where the mask hides the tokens."""
        tokens = token_rows(self.offsets, idx)
        real = mask.bool().cpu()
        out = []
        for table in self.tables:
            states = torch.zeros(*real.shape, table.shape[1], dtype=torch.float32)
            states[real] = table[tokens].float()
            out.append(states.to(mask.device, non_blocking=True))
        return out


def wanted(task, x: np.ndarray, widths: list[int], epochs: int) -> bool:
    """Whether storing pays and fits: text, more than one epoch, one process (each rank would store
    every row) and at most MAX_BYTES of states."""
    lengths = task.lengths(x)
    if lengths is None or epochs < 2 or distributed.size() > 1:
        return False
    return int(lengths.sum()) * sum(widths) * 2 <= MAX_BYTES


@torch.no_grad()
def compute(teacher: nn.Module, taps, task, x: np.ndarray, device: str, amp: str | None,
            batch_size: int = 64) -> TeacherStates:  # fmt: skip
    """Run `teacher` once over `x` in length order (little padding per batch) under the training's
    autocast, keeping each tapped layer's real tokens."""
    lengths = task.lengths(x).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    tables = [None] * len(taps.names)
    order = np.argsort(lengths, kind="stable")
    for i in range(0, len(x), batch_size):
        rows = order[i : i + batch_size]
        inputs = task.inputs(task.trim(x[rows]))  # token ids and attention mask
        with autocast(device, amp):
            teacher(*moved(inputs, device))
        mask = inputs[1].bool()
        where = token_rows(offsets, rows)
        for k, name in enumerate(taps.names):
            states = taps.outputs[name].detach().to("cpu", torch.float16)[mask]  # row by row, real tokens only
            if tables[k] is None:
                tables[k] = torch.empty(int(offsets[-1]), states.shape[-1], dtype=torch.float16)
            tables[k][where] = states
    return TeacherStates(tables, offsets)


def token_rows(offsets: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """The positions in a flat table of the tokens of `rows`, row after row."""
    return torch.from_numpy(np.concatenate([np.arange(offsets[r], offsets[r + 1]) for r in rows]))
