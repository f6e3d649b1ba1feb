"""Data sources and the split every stage shares: train, val (model selection) and test (reports).

A data source is one module with a `DataSource` subclass, registered by its `source:` name in
compress.registry (or a plug-in's `compress.datasets` entry point). Splits are plain numpy arrays
in NCHW float32 with int64 labels (detection: float32 box rows, see compress.detection.boxes),
saved as a folder of .npy files so a stage can run in another process from the cached folder alone,
and read back a batch at a time: a large split is never read whole (compress.data.rows).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np

from compress import registry

if TYPE_CHECKING:
    from compress.recipe.schema import DataSpec

ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
# Copy-on-write: pages come from the file as they are read, and a write (an in-place op on a tensor
# made with torch.from_numpy) changes this process's copy only, never the cached file.
MMAP_MODE = "c"
CHUNK_BYTES = 64 << 20  # what saving an array writes at a time


@dataclass
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str] = field(default_factory=list)
    # Further test sets from other sources (data.held_out): name -> (x, y), scored beside the test split
    held_out: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, without the batch axis."""
        return tuple(self.x_train.shape[1:])

    def calibration(self, samples: int, seed: int) -> np.ndarray:
        """A reproducible subset of the training split for quantization calibration."""
        rng = np.random.default_rng(seed)
        count = min(samples, len(self.x_train))
        return self.x_train[np.sort(rng.choice(len(self.x_train), count, replace=False))]

    def with_labels(self, label) -> Splits:
        """The same examples with labels computed by `label(x)` (e.g. a reference model's outputs)."""
        return Splits(self.x_train, label(self.x_train), self.x_val, label(self.x_val), self.x_test,
                      label(self.x_test), self.class_names,
                      {name: (x, label(x)) for name, (x, _) in self.held_out.items()})  # fmt: skip

    def save(self, path: Path) -> None:
        """Into the folder `path`: one .npy file per array (any held-out sets as x_held<i>, y_held<i>,
        named in held_out.json), then class_names.json (written last, so its presence means the folder is
        complete)."""
        path.mkdir(parents=True, exist_ok=True)
        for name in ARRAYS:
            save_array(path / f"{name}.npy", getattr(self, name))
        for i, (x, y) in enumerate(self.held_out.values()):
            save_array(path / f"x_held{i}.npy", x)
            save_array(path / f"y_held{i}.npy", y)
        if self.held_out:
            (path / "held_out.json").write_text(json.dumps(list(self.held_out)), encoding="utf-8")
        (path / "class_names.json").write_text(json.dumps(self.class_names), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Splits:
        """A saved folder: image arrays read row by row as they are used (compress.data.rows), the rest
        memory-mapped."""
        arrays = {name: open_split_array(path / f"{name}.npy") for name in ARRAYS}
        names = json.loads((path / "class_names.json").read_text(encoding="utf-8"))
        held = path / "held_out.json"
        held_out = {name: (open_split_array(path / f"x_held{i}.npy"), open_split_array(path / f"y_held{i}.npy"))
                    for i, name in enumerate(json.loads(held.read_text(encoding="utf-8")) if held.is_file() else [])}  # fmt: skip
        return cls(**arrays, class_names=[str(c) for c in names], held_out=held_out)

    @staticmethod
    def saved(path: Path) -> bool:
        return (path / "class_names.json").is_file()


def open_split_array(file: Path, in_memory: bool = False):
    """Image inputs (an `x_*` float array of 2+ axes per example) as a RowFile, whose resident memory
    is the rows in use; labels and token ids (small) read whole or memory-mapped."""
    from compress.data.rows import RowFile

    array = np.load(file, mmap_mode=MMAP_MODE)
    if file.name.startswith("x_") and array.ndim >= 3 and array.dtype.kind == "f":
        del array
        return RowFile(file)
    return np.array(array) if in_memory else array


def save_array(file: Path, array: np.ndarray) -> None:
    """Like np.save, but a chunk at a time, so a memory-mapped array is never read whole, and through
    plain writes, so a full disk is an OSError that says so."""
    array = array if hasattr(array, "row_bytes") else np.asanyarray(array)  # a RowFile is read a chunk at a time
    header = {"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False, "shape": array.shape}
    rows = max(1, CHUNK_BYTES // max(1, array[:1].nbytes))
    with open(file, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for start in range(0, len(array), rows):
            f.write(np.ascontiguousarray(array[start : start + rows]).data)


@dataclass(frozen=True)
class LoadContext:
    base_dir: Path  # paths in the recipe are relative to it
    seed: int
    model_arch: str | None = None  # the recipe's model, for sources that need its tokenizer
    scratch: Path | None = None  # where large arrays are written while loading; default: the temp folder


class DataSource:
    """What a data source declares about itself, and how it loads."""

    name: ClassVar[str]
    path: ClassVar[Literal["file", "dir"] | None] = None  # what `data.path` names, if anything
    path_means: ClassVar[str] = "a file"  # in words, for the error when it is missing
    path_required: ClassVar[bool] = False
    text: ClassVar[bool] = False  # examples are token ids and masks rather than images
    tasks: ClassVar[tuple[str, ...]] = ("classification",)
    procedural: ClassVar[bool] = False  # generates its examples (data.samples says how many)
    requires: ClassVar[dict[str, str]] = {}  # import name -> what to pip install
    # Training augmentation under `augment: auto` (compress.stages.augment.Augment fields); None:
    # images whose position or orientation carries meaning, or that a box label pins down.
    augment: ClassVar[dict | None] = None

    def check(self, spec: DataSpec) -> list[str]:
        """Problems with this source's settings that no single field shows (torch-free)."""
        return []

    def load(self, spec: DataSpec, path: Path | None, ctx: LoadContext) -> Splits:
        raise NotImplementedError

    def inputs(self, spec: DataSpec, path: Path | None, ctx: LoadContext) -> list[Path]:
        """The files and folders loading reads; the cache key hashes their content."""
        return [path] if path else []


def data_source(name: str) -> DataSource:
    return registry.resolve("datasets", name)()


def data_path(spec: DataSpec, base_dir: Path) -> Path | None:
    return (base_dir / Path(spec.path).expanduser()) if spec.path else None


def load_data(spec: DataSpec, base_dir: Path, seed: int, model_arch: str | None = None,
              scratch: Path | None = None) -> Splits:  # fmt: skip
    """Load the recipe's data source and split it deterministically from the seed."""
    ctx = LoadContext(base_dir, seed, model_arch, scratch)
    return data_source(spec.source).load(spec, data_path(spec, base_dir), ctx)


def data_inputs(spec: DataSpec, base_dir: Path, seed: int, model_arch: str | None = None) -> list[Path]:
    """What loading the recipe's data reads (see DataSource.inputs)."""
    return data_source(spec.source).inputs(spec, data_path(spec, base_dir), LoadContext(base_dir, seed, model_arch))


def split(x: np.ndarray, y: np.ndarray, spec: DataSpec, seed: int, class_names: list[str], stratify: bool = True,
          where: str = "the data") -> Splits:  # fmt: skip
    """Train/val/test split, stratified by class when there are classes; the same seed, the same split.
    Too few examples (or too few of a class) is a DataError naming `where` and how many are needed."""
    try:
        return _split(x, y, spec.val_fraction, spec.test_fraction, seed, stratify, class_names)
    except ValueError as exc:
        raise split_error(y, spec, stratify, class_names, where, exc) from None


def _split(x, y, val_fraction: float, test_fraction: float, seed: int, stratify: bool, class_names=()) -> Splits:
    from sklearn.model_selection import train_test_split

    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y if stratify else None
    )
    val = val_fraction / (1 - test_fraction)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val, random_state=seed, stratify=y_rest if stratify else None
    )
    return Splits(x_train, y_train, x_val, y_val, x_test, y_test, list(class_names))


def smallest_splittable(classes: int, val_fraction: float, test_fraction: float, stratify: bool = True) -> int | None:
    """The fewest examples, spread evenly over `classes`, that the split accepts (None: over a million)."""

    def works(n: int) -> bool:
        y = np.arange(n) % classes if stratify else np.zeros(n)
        try:
            _split(np.zeros((n, 1), np.float32), y, val_fraction, test_fraction, 0, stratify)
        except ValueError:
            return False
        return True

    low, high = 1, max(classes, 2)
    while not works(high):
        low, high = high + 1, high * 2
        if high > 1_000_000:
            return None
    while low < high:  # more examples never make the split fail, so bisect
        middle = (low + high) // 2
        low, high = (low, middle) if works(middle) else (middle + 1, high)
    return high


def split_error(y: np.ndarray, spec: DataSpec, stratify: bool, class_names: list[str], where: str,
                exc: ValueError) -> Exception:  # fmt: skip
    from compress.errors import DataError, first_line

    labels, counts = np.unique(y, return_counts=True) if stratify and len(y) else (np.zeros(1), np.array([len(y)]))
    classes = len(labels) if stratify else 1
    fractions = f"val_fraction {spec.val_fraction}, test_fraction {spec.test_fraction}"
    of_classes = f" with {classes} classes" if stratify else ""
    needed = smallest_splittable(classes, spec.val_fraction, spec.test_fraction, stratify)
    if needed is None or len(y) < needed:
        at_least = f"at least {needed} are needed" if needed else "far more are needed"
        return DataError(f"{where}: {len(y)} examples are too few to split into train, val and test "
                         f"({fractions}){of_classes}: {at_least}",
                         hint="add examples, or give your own train, val and test splits")  # fmt: skip
    rare = labels[counts.argmin()]
    name = class_names[int(rare)] if 0 <= int(rare) < len(class_names) else str(rare)
    few = counts.min()
    return DataError(f"{where}: cannot split {len(y)} examples{of_classes} into train, val and test ({fractions}): "
                     f"class {name} has {few} example{'s' if few != 1 else ''} ({first_line(exc)})",
                     hint=f"give every class at least {-(-needed // classes)} examples, or your own splits")  # fmt: skip


def to_nchw(images: np.ndarray, spec: DataSpec) -> np.ndarray:
    """A float batch (N,H,W) or (N,C,H,W) in [0, 1] at the spec's size (resize and crop) and channels,
    normalised with data.normalize (compress.data.preprocess); the same transform at deployment."""
    import torch

    from compress.data.preprocess import normalised, resized

    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    if x.ndim == 3:
        x = x[:, None]
    x = resized(x, spec)
    if x.shape[1] != spec.channels:
        x = x.mean(1, keepdim=True) if spec.channels == 1 else x.expand(-1, spec.channels, -1, -1)
    return normalised(x, spec).contiguous().numpy().astype(np.float32)
