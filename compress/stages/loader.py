"""Training batches read ahead by worker processes (`data.workers`).

A split on disk (data.rows.RowFile) is read a batch of rows at a time; with workers, a
torch DataLoader reads the next batches in other processes while the model trains, in the order
given, so results are the same with or without them. The workers start from a fresh interpreter
(forkserver, or spawn where there is none), never by forking this process: a fork copies the
runtime threads a training process holds (OpenMP, ONNX Runtime), and a child that inherits them
can crash. They live as long as the Reader, across epochs; an in-memory split needs none.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator

import numpy as np
import torch.utils.data

from compress.data.rows import RowFile


class Rows(torch.utils.data.Dataset):
    """(x rows, y rows) for an array of indices; pickles small (a RowFile pickles as its path)."""

    def __init__(self, x, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.x[index], self.y[index]


class Order(torch.utils.data.Sampler):
    """The batches of the epoch about to run: set before each pass (sampling runs in this process)."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def unchanged(batch):
    """The worker's batch as it is (numpy arrays, no tensors: the training step converts them)."""
    return batch


def context() -> str:
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


class Reader:
    """Reads (x[idx], y[idx]) for each idx in turn, `workers` processes ahead when x is on disk."""

    def __init__(self, x, y: np.ndarray, workers: int = 0) -> None:
        self.x, self.y, self.order, self.loader = x, y, Order(), None
        if workers > 0 and isinstance(x, RowFile):
            self.loader = torch.utils.data.DataLoader(
                Rows(x, y), batch_size=None, sampler=self.order, num_workers=workers, collate_fn=unchanged,
                multiprocessing_context=context(), persistent_workers=True, prefetch_factor=2,
            )  # fmt: skip

    def __call__(self, batches: list[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if self.loader is None:
            return ((self.x[idx], self.y[idx]) for idx in batches)
        self.order.batches = batches
        return iter(self.loader)

    def close(self) -> None:
        """Stop the workers now rather than when the loader is collected."""
        running = getattr(self.loader, "_iterator", None)
        if running is not None:
            running._shutdown_workers()
            self.loader._iterator = None

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
