"""A folder of class folders (`root/<class>/<image>`), or `train/`, `val/`, `test/` folders of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.data import DataSource, LoadContext, Splits, split, to_nchw
from compress.errors import StageError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class ImageFolder(DataSource):
    name, path, path_required = "imagefolder", "dir", True
    path_means = "a folder of class folders"
    requires = {"PIL": "pillow"}

    def load(self, spec, path: Path, ctx: LoadContext) -> Splits:
        return load(spec, path, ctx.seed)


def load(spec, path: Path, seed: int) -> Splits:
    if all((path / s).is_dir() for s in ("train", "val", "test")):
        classes = _classes(path / "train")
        parts = [_read(path / s, classes, spec) for s in ("train", "val", "test")]
        (xt, yt), (xv, yv), (xs, ys) = parts
        return Splits(xt, yt, xv, yv, xs, ys, classes)
    classes = _classes(path)
    x, y = _read(path, classes, spec)
    return split(x, y, spec, seed, classes)


def _classes(root: Path) -> list[str]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise StageError(f"{root} has {len(classes)} class folder(s)", hint="put each class's images in its own folder")
    return classes


def _read(root: Path, classes: list[str], spec) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    images, labels = [], []
    mode = "L" if spec.channels == 1 else "RGB"
    for label, name in enumerate(classes):
        for file in sorted((root / name).iterdir()):
            if file.suffix.lower() in EXTENSIONS:
                with Image.open(file) as img:
                    img = img.convert(mode).resize((spec.image_size, spec.image_size), Image.BILINEAR)
                    images.append(np.asarray(img, dtype=np.float32) / 255.0)
                labels.append(label)
    if not images:
        raise StageError(f"no images found under {root}", hint=f"supported files: {', '.join(sorted(EXTENSIONS))}")
    x = np.stack(images)
    x = x.transpose(0, 3, 1, 2) if x.ndim == 4 else x
    return to_nchw(x, spec), np.asarray(labels, dtype=np.int64)
