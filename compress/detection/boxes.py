"""Ground-truth boxes as one array per split, and back (numpy only).

Each image's objects are rows (x1, y1, x2, y2, class): corners in pixels of the S x S model input,
class an index 0..C-1. A split holds (N, M, 5) float32, M the largest object count in the whole data
source (at least 1), so every split has the same M; padding rows are zeros with class -1.
"""

from __future__ import annotations

import numpy as np

PAD_CLASS = -1


def pad_targets(targets: list[tuple[np.ndarray, np.ndarray]], rows: int | None = None) -> np.ndarray:
    """(N, M, 5) float32 from each image's (boxes (n, 4), classes (n,)); M is `rows` when given,
    else the largest n (at least 1)."""
    most = max((len(classes) for _, classes in targets), default=0)
    m = max(most, 1) if rows is None else rows
    if most > m:
        raise ValueError(f"an image has {most} objects, more than the {m} rows asked for")
    out = np.zeros((len(targets), m, 5), np.float32)
    out[:, :, 4] = PAD_CLASS
    for i, (boxes, classes) in enumerate(targets):
        n = len(classes)
        out[i, :n, :4] = np.asarray(boxes, np.float32).reshape(n, 4)
        out[i, :n, 4] = np.asarray(classes, np.float32)
    return out


def unpad(y_row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One image's (boxes (n, 4) float32, classes (n,) int64), without the padding rows."""
    y_row = np.asarray(y_row)
    keep = y_row[:, 4] >= 0
    return y_row[keep, :4].astype(np.float32), y_row[keep, 4].astype(np.int64)
