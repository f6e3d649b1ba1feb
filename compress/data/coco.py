"""A COCO-format detection folder: `images/` with `annotations.json`, or one annotation file per split.

    path/images/ + path/annotations.json                       split by the seed (not stratified)
    path/images/ + path/annotations/{train,val,test}.json      the splits as given
    path/images/ + path/{train,val,test}.json                  the same

Each annotation file is COCO's JSON (`images`, `annotations`, `categories`), read with the standard
library; `file_name` is relative to `images/`. Category ids become classes 0..C-1 in ascending id
order, named by the categories' names. Images are resized to image_size x image_size without keeping
their aspect ratio (simple and deterministic), and each box [x, y, w, h] in original pixels is scaled
with the image into corners (x1, y1, x2, y2) of the model input, clipped to it. Crowd annotations
(iscrowd 1) and boxes without area are skipped; images without annotations are kept, with padding
rows only (see compress.detection.boxes). Images are decoded a few at a time and written straight to
the split files, so a large folder is never held in memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compress.data import DataSource, LoadContext, Splits, to_nchw
from compress.data.disk import PARTS, SplitWriter, index_split
from compress.detection.boxes import pad_targets
from compress.errors import DataError, first_line

ANNOTATIONS = "annotations.json"
KEYS = ("images", "annotations", "categories")
HINT = ("give a COCO-format folder: images/ and annotations.json, or annotations/train.json, val.json "
        "and test.json (file_name relative to images/)")  # fmt: skip
CHUNK_BYTES = 64 << 20  # decoded pixels held at a time


class Coco(DataSource):
    name, path, path_required = "coco", "dir", True
    path_means = "a COCO-format folder (images/ and annotations.json)"
    tasks = ("detection",)
    requires = {"PIL": "pillow"}

    def check(self, spec) -> list[str]:
        return [] if spec.channels == 3 else ["source 'coco' reads colour images: set data.channels: 3"]

    def load(self, spec, path: Path, ctx: LoadContext) -> Splits:
        return load(spec, path, ctx.seed, ctx.scratch)


@dataclass
class Annotations:
    """One annotation file: each image's file and its (box [x, y, w, h], category id) pairs."""

    file: Path
    categories: dict[int, str]
    images: list[tuple[Path, list[tuple[list[float], int]]]] = field(default_factory=list)


def load(spec, path: Path, seed: int, scratch: Path | None = None) -> Splits:
    sets = [read(file, path / "images") for file in annotation_files(path)]
    categories = {cid: name for s in reversed(sets) for cid, name in s.categories.items()}
    ids = sorted(categories)
    classes = {cid: i for i, cid in enumerate(ids)}
    images = [image for s in sets for image in s.images]
    if len(sets) == 1:
        parts = index_split(len(images), spec, seed, where=str(sets[0].file))
    else:
        for s in sets:
            if not s.images:
                raise DataError(f"{s.file}: lists no images; each of train, val and test needs some", hint=HINT)
        ends = np.cumsum([len(s.images) for s in sets])
        parts = [np.arange(end - len(s.images), end) for s, end in zip(sets, ends, strict=True)]
    size = spec.image_size
    rows = max([1, *(len(objects) for _, objects in images)])
    chunk = max(1, CHUNK_BYTES // (3 * size * size * 4))
    with SplitWriter(parts, (3, size, size), (rows, 5), scratch) as writer:
        for start in range(0, len(images), chunk):
            pixels, targets = [], []
            for file, objects in images[start : start + chunk]:
                image, (width, height) = decode(file, size)
                pixels.append(image)
                targets.append(scaled(objects, width, height, size, classes))
            x = to_nchw(np.stack(pixels).transpose(0, 3, 1, 2), spec)
            writer.put(start, x, pad_targets(targets, rows))
        return writer.done([categories[cid] for cid in ids])


def annotation_files(path: Path) -> list[Path]:
    """annotations.json, or train, val and test annotation files (in annotations/ or at the root)."""
    if not (path / "images").is_dir():
        raise DataError(f"{path / 'images'}: missing; the images of a COCO folder are under images/", hint=HINT)
    if (path / ANNOTATIONS).is_file():
        return [path / ANNOTATIONS]
    for folder in (path / "annotations", path):
        files = [folder / f"{part}.json" for part in PARTS]
        missing = [f for f in files if not f.is_file()]
        if len(missing) < len(files):
            if missing:
                raise DataError(f"{missing[0]}: missing; split annotation files need train.json, val.json "
                                f"and test.json together in {folder}", hint=HINT)  # fmt: skip
            return files
    raise DataError(f"{path / ANNOTATIONS}: missing; {path} has no COCO annotation file", hint=HINT)


def read(file: Path, images: Path) -> Annotations:
    """An annotation file's images with their kept objects, or a DataError naming the file."""

    def fail(message: str):
        raise DataError(f"{file}: {message}", hint=HINT)

    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        fail(f"not a COCO annotation file: {first_line(exc)}")
    missing = [k for k in KEYS if not isinstance(data, dict) or not isinstance(data.get(k), list)]
    if missing:
        fail(f"not a COCO annotation file: no {', '.join(repr(k) for k in missing)} list")
    try:
        categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        listed = {int(i["id"]): (images / str(i["file_name"]), []) for i in data["images"]}
    except (KeyError, TypeError, ValueError) as exc:
        fail(f"a category or image without its id, name or file_name ({first_line(exc)})")
    if not categories:
        fail("no categories; a detection data set needs at least one")
    for number, a in enumerate(data["annotations"]):
        what = f"annotation {a.get('id', number) if isinstance(a, dict) else number}"
        try:
            image, category, crowd = int(a["image_id"]), int(a["category_id"]), bool(a.get("iscrowd", 0))
            box = [float(v) for v in a["bbox"]]
        except (KeyError, TypeError, ValueError) as exc:
            fail(f"{what} lacks a valid image_id, category_id or bbox ({first_line(exc)})")
        if image not in listed:
            fail(f"{what} has image_id {image}, which no image in 'images' has")
        if category not in categories:
            fail(f"{what} has category_id {category}, which no category in 'categories' has")
        if len(box) != 4 or not np.isfinite(box).all():
            fail(f"{what} has bbox {box}; expected [x, y, width, height]")
        if not crowd and box[2] > 0 and box[3] > 0:
            listed[image][1].append((box, category))
    for image_file, _ in listed.values():
        if not image_file.is_file():
            fail(f"lists image {image_file}, which is missing")
    return Annotations(file, categories, list(listed.values()))


def decode(file: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(size, size, 3) float32 RGB in [0, 1], and the original (width, height)."""
    from PIL import Image

    try:
        with Image.open(file) as img:
            original = img.size
            pixels = np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.float32)
    except Exception as exc:  # Pillow raises many types for damaged or unsupported files
        raise DataError(f"{file}: not a readable image: {first_line(exc)}",
                        hint="remove or replace the file, or its entry in the annotation file") from None  # fmt: skip
    return pixels / np.float32(255.0), original


def scaled(objects: list, width: int, height: int, size: int, classes: dict[int, int]):
    """(boxes (n, 4) corners in model-input pixels, classes (n,)): scaled, clipped, empty ones dropped."""
    if not objects:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    xywh = np.array([box for box, _ in objects], np.float64)
    scale = np.array([size / width, size / height] * 2)
    boxes = (np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1) * scale).clip(0, size)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    labels = np.array([classes[c] for _, c in objects], np.int64)
    return boxes[keep].astype(np.float32), labels[keep]
