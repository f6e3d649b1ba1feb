"""Arrays from an .npz file: `x`, `y` (split by the recipe) or `x_train`, `y_train`, `x_val`, ... .

Images are (N, H, W) or (N, C, H, W) with values in [0, 1] (or 0-255 as uint8); labels are integers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.data import DataSource, LoadContext, Splits, split, to_nchw
from compress.errors import StageError

SPLIT_KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


class Npz(DataSource):
    name, path, path_required = "npz", "file", True
    path_means = "an .npz file"

    def load(self, spec, path: Path, ctx: LoadContext) -> Splits:
        return load(spec, path, ctx.seed)


def load(spec, path: Path, seed: int) -> Splits:
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    names = [str(c) for c in arrays.get("class_names", [])]
    if all(k in arrays for k in SPLIT_KEYS):
        parts = {k: _images(arrays[k], spec) if k.startswith("x") else arrays[k].astype(np.int64) for k in SPLIT_KEYS}
        labels = np.concatenate([parts["y_train"], parts["y_val"], parts["y_test"]])
        return Splits(**parts, class_names=names or _label_names(labels))
    if "x" in arrays and "y" in arrays:
        y = arrays["y"].astype(np.int64)
        return split(_images(arrays["x"], spec), y, spec, seed, names or _label_names(y))
    raise StageError(
        f"{path} holds {sorted(arrays)}; expected 'x' and 'y', or {', '.join(SPLIT_KEYS)}",
        hint="save the arrays with numpy.savez(path, x=images, y=labels)",
    )


def _images(x: np.ndarray, spec) -> np.ndarray:
    x = x.astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0)
    return to_nchw(x, spec)


def _label_names(y: np.ndarray) -> list[str]:
    return [str(c) for c in range(int(y.max()) + 1)]
