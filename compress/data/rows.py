"""A .npy file read row by row, so a split of any size costs only the rows in use.

A memory-mapped array keeps every page it has touched resident in the process: one training epoch
over a memory-mapped 50,000-image split makes the process as large as the split. `RowFile` reads
the rows an index asks for with plain positioned reads (the operating system's page cache still
serves repeated reads) and returns an ordinary in-memory array, so resident memory follows the batch
size, not the data size. It pickles as its path, so worker processes open the file themselves. The
measuring program reads its evaluation inputs with it too, so it needs numpy alone (Python 3.8+).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class RowFile:
    """The first-axis rows of a C-ordered .npy file; `x[idx]` returns an in-memory copy."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(f)
            self.offset = f.tell()
        if fortran or dtype.hasobject or not shape:
            raise ValueError(f"{self.path}: not a C-ordered numeric array with rows")
        self.shape, self.dtype = tuple(shape), dtype
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        # Open now, so the rows stay readable if the name goes (a temporary split, POSIX).
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_fd"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return self.row_bytes * self.shape[0]

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)

    def __getitem__(self, key) -> np.ndarray:
        rest = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, (int, np.integer)):
            rows, lead = self._rows(np.array([key]))[0], 0
        elif isinstance(key, slice):
            rows, lead = self._rows(np.arange(*key.indices(len(self)))), 1
        else:
            index = np.asarray(key)
            index = np.flatnonzero(index) if index.dtype == bool else index.astype(np.int64)
            rows, lead = self._rows(index.ravel()).reshape(*index.shape, *self.shape[1:]), index.ndim
        return rows[(slice(None),) * lead + rest] if rest else rows

    def _rows(self, index: np.ndarray) -> np.ndarray:
        n = len(self)
        index = np.where(index < 0, index + n, index)
        if index.size and (index.min() < 0 or index.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        out = np.empty((len(index), *self.shape[1:]), self.dtype)
        if not out.size:
            return out
        buffer = memoryview(out.reshape(-1).view(np.uint8))
        for start, stop in _runs(index):  # consecutive rows: one read each
            position = self.offset + int(index[start]) * self.row_bytes
            part, done = buffer[start * self.row_bytes : stop * self.row_bytes], 0
            while done < len(part):
                read = _read_at(self._fd, part[done:], position + done)
                if not read:
                    raise OSError(f"{self.path}: the file ends before row {int(index[start]) + stop - start}")
                done += read
        return out


def _read_at(fd: int, buffer: memoryview, position: int) -> int:
    """Read into `buffer` from `position` without moving a shared file offset (forked workers share
    the descriptor)."""
    if hasattr(os, "preadv"):
        return os.preadv(fd, [buffer], position)
    data = os.pread(fd, len(buffer), position) if hasattr(os, "pread") else _seek_read(fd, len(buffer), position)
    buffer[: len(data)] = data
    return len(data)


def _seek_read(fd: int, size: int, position: int) -> bytes:
    os.lseek(fd, position, os.SEEK_SET)
    return os.read(fd, size)


def _runs(index: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) positions in `index` where the row numbers go up by one."""
    if not index.size:
        return []
    breaks = np.flatnonzero(np.diff(index) != 1) + 1
    edges = [0, *breaks.tolist(), len(index)]
    return list(zip(edges[:-1], edges[1:]))  # noqa: B905 - the measuring program runs on Python 3.8 too
