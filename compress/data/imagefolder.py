"""A folder of class folders (`root/<class>/<image>`), or `train/`, `val/`, `test/` folders of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.data import DataSource, LoadContext, Splits, split, to_nchw
from compress.data.disk import SplitWriter
from compress.errors import DataError, first_line

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


CHUNK = 256  # images decoded at a time: loading holds this many, never the whole folder


class ImageFolder(DataSource):
    name, path, path_required = "imagefolder", "dir", True
    path_means = "a folder of class folders"
    augment = {"crop_scale": (0.35, 1.0), "flip": True}  # photos: the usual fine-tuning augmentation
    requires = {"PIL": "pillow"}

    def load(self, spec, path: Path, ctx: LoadContext) -> Splits:
        return load(spec, path, ctx.seed, ctx.scratch)


def load(spec, path: Path, seed: int, scratch: Path | None = None) -> Splits:
    """Each image decoded once, a chunk at a time, straight into its split's file on disk."""
    if all((path / s).is_dir() for s in ("train", "val", "test")):
        classes = _classes(path / "train")
        listed = [_files(path / s, classes) for s in ("train", "val", "test")]
        files = [f for part in listed for f in part[0]]
        labels = np.concatenate([part[1] for part in listed])
        ends = np.cumsum([len(part[0]) for part in listed])
        parts = [np.arange(a, b) for a, b in zip([0, *ends[:-1]], ends, strict=True)]
    else:
        classes = _classes(path)
        files, labels = _files(path, classes)
        index = np.arange(len(files))
        stratified = split(index, labels, spec, seed, classes, where=str(path))
        parts = [stratified.x_train, stratified.x_val, stratified.x_test]
    mode = "L" if spec.channels == 1 else "RGB"
    shape = (spec.channels, spec.image_size, spec.image_size)
    with SplitWriter(parts, shape, (), scratch, y_dtype=np.int64) as writer:
        for start in range(0, len(files), CHUNK):
            x = np.stack([_image(f, mode, spec) for f in files[start : start + CHUNK]])
            x = x.transpose(0, 3, 1, 2) if x.ndim == 4 else x
            writer.put(start, to_nchw(x, spec), labels[start : start + CHUNK])
        return writer.done(classes)


def _classes(root: Path) -> list[str]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise DataError(f"{root} has {len(classes)} class folder(s); expected at least 2",
                        hint="put each class's images in its own folder")  # fmt: skip
    return classes


def _files(root: Path, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    files, labels = [], []
    for label, name in enumerate(classes):
        if not (root / name).is_dir():
            raise DataError(f"{root} has no class folder '{name}'; expected the same class folders as train/",
                            hint="give train, val and test one folder per class each")  # fmt: skip
        for file in sorted((root / name).iterdir()):
            if file.suffix.lower() in EXTENSIONS:
                files.append(file)
                labels.append(label)
    if not files:
        raise DataError(f"no images found under {root}", hint=f"supported files: {', '.join(sorted(EXTENSIONS))}")
    return files, np.asarray(labels, dtype=np.int64)


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
