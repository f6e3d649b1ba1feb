"""Splits written example by example straight into .npy files, for sources too large to hold in memory.

A source that reads (or generates) one example at a time fixes each example's split first
(`index_split`), then writes every example into its split's file (`SplitWriter`), so no split is ever whole in
memory, neither while loading nor afterwards.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from compress.data import ARRAYS, Splits, open_split_array, split
from compress.errors import writing

PARTS = ("train", "val", "test")


def index_split(n: int, spec, seed: int, where: str) -> list[np.ndarray]:
    """Train, val and test indices of `n` examples, not stratified: the same seed, the same split
    as `split` would make of the examples themselves (too few examples is a DataError)."""
    index = np.arange(n)
    parts = split(index, index, spec, seed, [], stratify=False, where=where)
    return [parts.x_train, parts.x_val, parts.x_test]


class SplitWriter:
    """.npy files for each split's x and y, in a temporary folder under `scratch`, written row by row.

    `parts` gives the example indices of train, val and test (in order); `put(start, x, y)` writes
    examples start, start+1, ... wherever their split holds them, with plain positioned writes (a
    memory-mapped file would keep every page written resident in this process). `done` opens the
    x files for reading row by row (compress.data.rows), reads the small label arrays, and removes
    the folder: an open file stays readable after its name is gone (POSIX), and its disk space is
    freed when it is closed. Where that is refused the folder stays; its name starts with a dot, so a
    later run cleans it out of the cache. Use as a context manager: failing removes the folder.
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
        self.files: dict[str, tuple[int, int, int, np.dtype]] = {}  # name -> (fd, data offset, row bytes, dtype)
        with self, writing(self.folder):
            for i, (name, indices) in enumerate(zip(PARTS, parts, strict=True)):
                self.part[indices], self.row[indices] = i, np.arange(len(indices))
                for prefix, shape, dtype in (("x", x_shape, np.float32), ("y", y_shape, y_dtype)):
                    self.files[f"{prefix}_{name}"] = allocate(self.folder / f"{prefix}_{name}.npy",
                                                              (len(indices), *shape), dtype)  # fmt: skip

    def __enter__(self) -> SplitWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None:
            self.close()
            shutil.rmtree(self.folder, ignore_errors=True)

    def close(self) -> None:
        for fd, *_ in self.files.values():
            os.close(fd)
        self.files.clear()

    def put(self, start: int, x: np.ndarray, y: np.ndarray) -> None:
        part, row = self.part[start : start + len(x)], self.row[start : start + len(x)]
        with writing(self.folder):
            for example in range(len(x)):
                name = PARTS[part[example]]
                for prefix, values in (("x", x), ("y", y)):
                    fd, offset, row_bytes, dtype = self.files[f"{prefix}_{name}"]
                    data = np.ascontiguousarray(values[example], dtype=dtype).tobytes()
                    write_at(fd, data, offset + int(row[example]) * row_bytes)

    def done(self, class_names: list[str]) -> Splits:
        self.close()
        loaded = {
            name: open_split_array(self.folder / f"{name}.npy", in_memory=name.startswith("y")) for name in ARRAYS
        }
        shutil.rmtree(self.folder, ignore_errors=True)
        return Splits(**loaded, class_names=list(class_names))


def write_at(fd: int, data: bytes, position: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, position) if hasattr(os, "pwrite") else _seek_write(fd, view, position)
        view, position = view[written:], position + written


def _seek_write(fd: int, data: memoryview, position: int) -> int:
    os.lseek(fd, position, os.SEEK_SET)
    return os.write(fd, data)


def allocate(file: Path, shape: tuple[int, ...], dtype=np.float32) -> tuple[int, int, int, np.dtype]:
    """A new .npy file of `shape`, its header written and its disk blocks reserved (a full disk is an
    OSError here, not later); returns (open descriptor, data offset, row bytes, dtype)."""
    dtype = np.dtype(dtype)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    with open(file, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        offset = f.tell()
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    fd = os.open(file, os.O_RDWR | getattr(os, "O_BINARY", 0))
    size = offset + row_bytes * shape[0]
    try:
        if hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd, offset, row_bytes, dtype
