"""scikit-learn's bundled handwritten digits (1,797 8x8 images, 10 classes): the embedded default."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.data import DataSource, LoadContext, Splits, split, to_nchw


class Digits(DataSource):
    name = "digits"

    def load(self, spec, path: Path | None, ctx: LoadContext) -> Splits:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = digits.images.astype(np.float32) / 16.0
        x = to_nchw(images, spec)
        return split(x, digits.target.astype(np.int64), spec, ctx.seed, [str(c) for c in range(10)])
