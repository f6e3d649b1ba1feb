"""Splits written example by example straight into .npy files, for sources too large to hold in memory.

A source that reads (or generates) one example at a time fixes each example's split first
(`index_split`), then writes every example into its split's memory-mapped file (`SplitWriter`), so
no split is ever whole in memory, neither while loading nor afterwards.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from compress.data import ARRAYS, MMAP_MODE, Splits, split
from compress.errors import writing

PARTS = ("train", "val", "test")


def index_split(n: int, spec, seed: int, where: str) -> list[np.ndarray]:
    """Train, val and test indices of `n` examples, not stratified: the same seed, the same split
    as `split` would make of the examples themselves (too few examples is a DataError)."""
    index = np.arange(n)
    parts = split(index, index, spec, seed, [], stratify=False, where=where)
    return [parts.x_train, parts.x_val, parts.x_test]


class SplitWriter:
    """Memory-mapped .npy files for each split's x and y, in a temporary folder under `scratch`.

    `parts` gives the example indices of train, val and test (in order); `put(start, x, y)` writes
    examples start, start+1, ... wherever their split holds them. `done` reopens the files lazily and
    removes the folder: a mapped file stays readable after its name is gone (POSIX), and its disk space
    is freed with the last array. Where that is refused the folder stays; its name starts with a dot,
    so a later run cleans it out of the cache. Use as a context manager: failing removes the folder.
    """

    def __init__(self, parts: list[np.ndarray], x_shape: tuple[int, ...], y_shape: tuple[int, ...],
                 scratch: Path | None = None, y_dtype=np.float32) -> None:  # fmt: skip
        with writing(scratch or tempfile.gettempdir()):
            if scratch is not None:
                scratch.mkdir(parents=True, exist_ok=True)
            self.folder = Path(tempfile.mkdtemp(prefix=".splits-", dir=scratch))
        total = sum(len(p) for p in parts)
        self.part = np.zeros(total, np.int8)  # example -> its split
        self.row = np.zeros(total, np.int64)  # example -> its row in that split
        self.arrays: dict[str, np.memmap] = {}
        with self, writing(self.folder):
            for i, (name, indices) in enumerate(zip(PARTS, parts, strict=True)):
                self.part[indices], self.row[indices] = i, np.arange(len(indices))
                for prefix, shape, dtype in (("x", x_shape, np.float32), ("y", y_shape, y_dtype)):
                    file = self.folder / f"{prefix}_{name}.npy"
                    self.arrays[f"{prefix}_{name}"] = allocate(file, (len(indices), *shape), dtype)

    def __enter__(self) -> SplitWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None:
            self.arrays.clear()
            shutil.rmtree(self.folder, ignore_errors=True)

    def put(self, start: int, x: np.ndarray, y: np.ndarray) -> None:
        part, row = self.part[start : start + len(x)], self.row[start : start + len(x)]
        for i, name in enumerate(PARTS):
            mine = part == i
            if mine.any():
                self.arrays[f"x_{name}"][row[mine]] = x[mine]
                self.arrays[f"y_{name}"][row[mine]] = y[mine]

    def done(self, class_names: list[str]) -> Splits:
        for array in self.arrays.values():
            array.flush()
        self.arrays.clear()
        loaded = {name: np.load(self.folder / f"{name}.npy", mmap_mode=MMAP_MODE) for name in ARRAYS}
        shutil.rmtree(self.folder, ignore_errors=True)
        return Splits(**loaded, class_names=list(class_names))


def allocate(file: Path, shape: tuple[int, ...], dtype=np.float32) -> np.memmap:
    """A new .npy file mapped for writing, its disk blocks reserved first: a full disk is an
    OSError here rather than a crash (SIGBUS) while writing into the mapping."""
    array = np.lib.format.open_memmap(file, mode="w+", dtype=dtype, shape=shape)
    if hasattr(os, "posix_fallocate"):
        with open(file, "r+b") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
    return array
