"""Arrays from an .npz file: `x`, `y` (split by the recipe) or `x_train`, `y_train`, `x_val`, ... .

Images are (N, H, W) or (N, C, H, W) with values in [0, 1] (or 0-255 as uint8); labels are integers
0..K-1, with optional `class_names`. Everything is checked before use: a mistake names the file,
the array and what was expected.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.data import DataSource, LoadContext, Splits, split, to_nchw
from compress.errors import DataError, first_line

SPLIT_KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
MAX_CLASSES = 100_000
LARGEST = float(np.finfo(np.float32).max) / 4  # pixel magnitude that stays finite once centred on zero
HINT = (
    "save the arrays with numpy.savez(path, x=images, y=labels): images (N, H, W) or (N, C, H, W) "
    "in [0, 1] (or uint8 0-255), labels integers 0..K-1"
)
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


class Npz(DataSource):
    name, path, path_required = "npz", "file", True
    path_means = "an .npz file"

    def load(self, spec, path: Path, ctx: LoadContext) -> Splits:
        return load(spec, path, ctx.seed)


def load(spec, path: Path, seed: int) -> Splits:
    arrays = read(path)
    if all(k in arrays for k in SPLIT_KEYS):
        parts = {}
        for s in ("train", "val", "test"):
            x, y = checked(arrays[f"x_{s}"], arrays[f"y_{s}"], path, f"x_{s}", f"y_{s}", spec.channels)
            parts[f"x_{s}"], parts[f"y_{s}"] = to_nchw(x, spec), y
        labels = np.concatenate([parts["y_train"], parts["y_val"], parts["y_test"]])
        return Splits(**parts, class_names=class_names(arrays, labels, path))
    if "x" in arrays and "y" in arrays:
        x, y = checked(arrays["x"], arrays["y"], path, "x", "y", spec.channels)
        return split(to_nchw(x, spec), y, spec, seed, class_names(arrays, y, path), where=str(path))
    raise DataError(f"{path} holds {sorted(arrays)}; expected 'x' and 'y', or {', '.join(SPLIT_KEYS)}", hint=HINT)


def read(path: Path) -> dict[str, np.ndarray]:
    """Every array in the archive; object arrays are refused (loading them could run code)."""
    with open(path, "rb") as f:
        head = f.read(6)
    if head == b"\x93NUMPY":
        raise DataError(f"{path}: a single .npy array, not an .npz archive of named arrays", hint=HINT)
    if not head.startswith(ZIP_MAGIC):
        what = "the file is empty" if not head else "it is not a zip file"
        raise DataError(f"{path}: not an .npz archive ({what})", hint=HINT)
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:  # zipfile, zlib and numpy raise several types for a damaged archive
        raise DataError(f"{path}: not an .npz archive ({first_line(exc)})", hint=HINT) from None
    arrays = {}
    with archive:
        for key in archive.files:
            try:
                arrays[key] = archive[key]
            except ValueError as exc:
                if "allow_pickle" not in str(exc):
                    raise DataError(f"{path}: array '{key}' cannot be read: {first_line(exc)}", hint=HINT) from None
                raise DataError(f"{path}: array '{key}' holds Python objects; object arrays are not loaded "
                                "(they could run code)", hint=HINT) from None  # fmt: skip
            except Exception as exc:
                raise DataError(f"{path}: array '{key}' cannot be read: {first_line(exc)}", hint=HINT) from None
    return arrays


def checked(x: np.ndarray, y: np.ndarray, path: Path, xname: str, yname: str, channels: int):
    """Images as float32 in [0, 1] and labels as int64, or a DataError saying what is wrong."""

    def fail(message: str, hint: str = HINT):
        raise DataError(f"{path}: {message}", hint=hint)

    if x.dtype.kind in "US":
        fail(f"{xname} holds strings (dtype {x.dtype}); expected numbers")
    if x.dtype.kind not in "biuf":
        fail(f"{xname} holds {x.dtype} values; expected numbers")
    if x.ndim not in (3, 4):
        fail(f"{xname} has shape {x.shape}; expected images (N, H, W) or (N, C, H, W)")
    if len(x) == 0:
        fail(f"{xname} holds no examples")
    if 0 in x.shape[1:]:
        fail(f"{xname} has shape {x.shape}; each image needs at least one pixel")
    if x.ndim == 4 and channels != 1 and x.shape[1] not in (1, channels):
        last = x.shape[-1] in (1, channels)
        fail(f"{xname} has shape {x.shape}: {x.shape[1]} channels; expected 1 or {channels} (data.channels)",
             hint="channels come second: x.transpose(0, 3, 1, 2)" if last else HINT)  # fmt: skip
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        fail(f"{xname} holds NaN or infinite values")
    peak = float(np.abs(x).max())
    if peak > LARGEST:  # resizing and centring would overflow float32 to infinity
        fail(f"{xname} holds values too large for float32 (up to {peak:g}); expected images in [0, 1]")
    if y.dtype.kind in "US":
        fail(f"{yname} holds strings (dtype {y.dtype}); expected integer labels 0..K-1",
             hint="map each class to a number and save the names as class_names=[...]")  # fmt: skip
    if y.dtype.kind not in "biuf":
        fail(f"{yname} holds {y.dtype} values; expected integer labels 0..K-1")
    if y.ndim != 1:
        fail(f"{yname} has shape {y.shape}; expected one label per example, shape (N,)")
    if len(y) != len(x):
        fail(f"{xname} has {len(x)} examples but {yname} has {len(y)}; each image needs one label")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            fail(f"{yname} holds NaN or infinite values; expected integer labels 0..K-1")
        fractional = y[y != np.floor(y)]
        if len(fractional):
            fail(f"{yname} holds fractional values (e.g. {fractional[0]:g}); expected integer labels 0..K-1")
    if y.min() < 0:
        fail(f"{yname} has a negative label ({y.min():g}); expected labels 0, 1, 2, ... (one per class)")
    if y.max() >= MAX_CLASSES:
        fail(f"{yname} has label {y.max():g}; expected labels 0..K-1 with at most {MAX_CLASSES} classes")
    images = x.astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0)
    return images, y.astype(np.int64)


def class_names(arrays: dict[str, np.ndarray], labels: np.ndarray, path: Path) -> list[str]:
    """`class_names` when saved (one per label), else the label numbers."""
    count = int(labels.max()) + 1 if len(labels) else 0
    saved = arrays.get("class_names")
    if saved is None or saved.size == 0:
        return [str(c) for c in range(count)]
    if saved.ndim != 1:
        raise DataError(f"{path}: class_names has shape {saved.shape}; expected one name per class", hint=HINT)
    if len(saved) < count:
        raise DataError(f"{path}: labels go up to {count - 1} but class_names lists {len(saved)} names",
                        hint="give one name per label 0..K-1")  # fmt: skip
    return [str(c) for c in saved]
