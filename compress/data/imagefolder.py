"""A folder of class folders (`root/<class>/<image>`), or `train/`, `val/`, `test/` folders of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.data import DataSource, LoadContext, Splits, split, to_nchw
from compress.errors import DataError, first_line

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
    return split(x, y, spec, seed, classes, where=str(path))


def _classes(root: Path) -> list[str]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise DataError(f"{root} has {len(classes)} class folder(s); expected at least 2",
                        hint="put each class's images in its own folder")  # fmt: skip
    return classes


def _read(root: Path, classes: list[str], spec) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    mode = "L" if spec.channels == 1 else "RGB"
    for label, name in enumerate(classes):
        if not (root / name).is_dir():
            raise DataError(f"{root} has no class folder '{name}'; expected the same class folders as train/",
                            hint="give train, val and test one folder per class each")  # fmt: skip
        for file in sorted((root / name).iterdir()):
            if file.suffix.lower() in EXTENSIONS:
                images.append(_image(file, mode, spec))
                labels.append(label)
    if not images:
        raise DataError(f"no images found under {root}", hint=f"supported files: {', '.join(sorted(EXTENSIONS))}")
    x = np.stack(images)
    x = x.transpose(0, 3, 1, 2) if x.ndim == 4 else x
    return to_nchw(x, spec), np.asarray(labels, dtype=np.int64)


def _image(file: Path, mode: str, spec) -> np.ndarray:
    """One image at the spec's size: stretched to it, or with data.resize resized and centre-cropped."""
    from PIL import Image

    from compress.data.preprocess import crop_box

    try:
        with Image.open(file) as img:
            size, box = crop_box(*img.size, spec)
            img = img.convert(mode).resize(size, Image.BILINEAR).crop(box)
            return np.asarray(img, dtype=np.float32) / 255.0
    except Exception as exc:  # Pillow raises many types for damaged or unsupported files
        raise DataError(f"{file}: not a readable image: {first_line(exc)}",
                        hint="remove or replace the file; every image file in a class folder is read") from None  # fmt: skip
