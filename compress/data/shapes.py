"""Shapes on textured backgrounds, drawn from the seed: the embedded default for detection.

Each image has a random base colour, smooth low-frequency colour variation and fine per-pixel noise,
and 1 to 5 objects of three classes: rectangle, circle and triangle. An object's colour is at least
MIN_CONTRAST (distance in RGB, pixels in [0, 1]) from the mean of what it covers. Box sides are 16 to
56 pixels at 128 x 128, scaled by image_size / 128. A placement whose box overlaps an earlier one by
IoU over 0.3 is drawn again, at most TRIES times; then the object is left out. Boxes are the tight
boxes of the drawn shapes, in pixel corners: a shape covering columns 3 to 9 has x1 = 3, x2 = 10.

The same seed gives the same images, drawn with numpy a chunk at a time and written straight to the
split files, so `data.samples` is not limited by memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from compress.data import DataSource, LoadContext, Splits, to_nchw
from compress.data.disk import SplitWriter, index_split
from compress.detection.boxes import pad_targets

CLASSES = ["rectangle", "circle", "triangle"]
SIDES = (16, 56)  # box sides at REFERENCE pixels
REFERENCE = 128
SMALLEST = 64  # smaller images would make the smallest objects a few pixels across
MOST = 5  # objects per image
MAX_IOU = 0.3
TRIES = 20
MIN_CONTRAST = 0.4
GRID = 5  # control points per side of the low-frequency noise
FINE = 0.06  # the per-pixel noise is uniform in [-FINE, FINE]
CHUNK = 256  # images drawn at a time
DEFAULT_SAMPLES = 1000


class Shapes(DataSource):
    name = "shapes"
    tasks = ("detection",)
    procedural = True

    def check(self, spec) -> list[str]:
        problems = []
        if spec.channels != 3:
            problems.append("source 'shapes' draws colour images: set data.channels: 3")
        if spec.image_size < SMALLEST:
            problems.append(f"source 'shapes' needs data.image_size {SMALLEST} or more (objects are "
                            f"{SIDES[0]}-{SIDES[1]} px at {REFERENCE}, scaled with the size); {REFERENCE} is usual")  # fmt: skip
        return problems

    def load(self, spec, path: Path | None, ctx: LoadContext) -> Splits:
        n = spec.samples or DEFAULT_SAMPLES
        size = spec.image_size
        parts = index_split(n, spec, ctx.seed, where=f"source 'shapes' with {n} samples (data.samples)")
        plans, chunks = generate(n, size, ctx.seed)
        rows = max(len(p) for p in plans)
        with SplitWriter(parts, (3, size, size), (rows, 5), ctx.scratch) as writer:
            for start, images in chunks:
                targets = [(p[:, 1:5], p[:, 0]) for p in plans[start : start + len(images)]]
                writer.put(start, to_nchw(images, spec), pad_targets(targets, rows))
            return writer.done(CLASSES)


def generate(n: int, size: int, seed: int) -> tuple[list[np.ndarray], Iterator[tuple[int, np.ndarray]]]:
    """Each image's objects, rows (class, x1, y1, x2, y2, apex, flip), and the images (start, images
    (k, 3, S, S) float32 in [0, 1]) a chunk at a time. The layout comes first, so the largest object
    count is known before any image is drawn."""
    rng = np.random.default_rng(seed)
    plans = [layout(rng, size) for _ in range(n)]

    def chunks() -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, n, CHUNK):
            yield start, draw(plans[start : start + CHUNK], size, rng)

    return plans, chunks()


def sides(size: int) -> tuple[int, int]:
    return round(SIDES[0] * size / REFERENCE), round(SIDES[1] * size / REFERENCE)


def layout(rng: np.random.Generator, size: int) -> np.ndarray:
    """One image's objects: (class, x1, y1, x2, y2, apex, flip) per row, boxes overlapping by IoU <= MAX_IOU."""
    low, high = sides(size)
    objects: list[list[int]] = []
    for _ in range(int(rng.integers(1, MOST + 1))):
        for _ in range(TRIES):
            cls = int(rng.integers(len(CLASSES)))
            w, h = (int(v) for v in rng.integers(low, high + 1, 2))
            h = w if CLASSES[cls] == "circle" else h
            x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
            box = [x, y, x + w, y + h]
            if not objects or iou(np.array(box), np.array(objects)[:, 1:5]).max() <= MAX_IOU:
                objects.append([cls, *box, int(rng.integers(w)), int(rng.integers(2))])
                break
    return np.array(objects, np.int64).reshape(-1, 7)


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box (x1, y1, x2, y2) with each of `boxes`."""
    w = (np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])).clip(0)
    h = (np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])).clip(0)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return w * h / (area + areas - w * h)


def draw(plans: list[np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    images = background(len(plans), size, rng)
    for image, objects in zip(images, plans, strict=True):
        for cls, x1, y1, x2, y2, apex, flip in objects:
            mask = shape_mask(int(cls), int(x2 - x1), int(y2 - y1), int(apex), bool(flip))
            region = image[:, y1:y2, x1:x2]
            region[:, mask] = contrasting(region[:, mask].mean(axis=1), rng)[:, None]
    noise = rng.random(images.shape, dtype=np.float32)  # uniform: several times faster than normal
    noise -= np.float32(0.5)
    noise *= np.float32(2 * FINE)
    images += noise
    return np.clip(images, 0.0, 1.0, out=images)


def background(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 3, S, S) float32: a base colour plus GRID x GRID random values per channel, bilinearly spread."""
    t = (np.arange(size) + 0.5) / size * (GRID - 1)
    spread = np.maximum(0.0, 1.0 - np.abs(t[:, None] - np.arange(GRID)[None])).astype(np.float32)  # (S, GRID)
    smooth = spread @ (rng.random((n, 3, GRID, GRID), dtype=np.float32) - np.float32(0.5)) @ spread.T
    base = rng.uniform(0.15, 0.85, (n, 3, 1, 1)).astype(np.float32)
    strength = rng.uniform(0.1, 0.4, (n, 1, 1, 1)).astype(np.float32)
    return base + strength * smooth


def contrasting(under: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random colour at least MIN_CONTRAST from `under`; failing that, the farthest corner of the cube."""
    for _ in range(10):
        colour = rng.random(3, dtype=np.float32)
        if np.linalg.norm(colour - under) >= MIN_CONTRAST:
            return colour
    return (under < 0.5).astype(np.float32)


def shape_mask(cls: int, w: int, h: int, apex: int = 0, flip: bool = False) -> np.ndarray:
    """(h, w) bool: the pixels whose centres lie in the shape. Every row and column holds some, so the
    w x h box is the shape's tight box. A triangle's apex is on the top row at column `apex` (on the
    bottom row when flipped), its base along the opposite row."""
    name = CLASSES[cls]
    if name == "rectangle":
        return np.ones((h, w), bool)
    y, x = np.mgrid[0:h, 0:w] + 0.5
    if name == "circle":
        return (x - w / 2) ** 2 + (y - h / 2) ** 2 <= (w / 2) ** 2 + 1e-9
    top, left, right = (apex + 0.5, 0.5), (0.5, h - 0.5), (w - 0.5, h - 0.5)  # at pixel centres

    def edge(a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:  # > 0 left of a -> b
        return (b[0] - a[0]) * (y - a[1]) - (b[1] - a[1]) * (x - a[0])

    edges = np.stack([edge(top, left), edge(left, right), edge(right, top)])
    inside = (edges >= -1e-9).all(axis=0) | (edges <= 1e-9).all(axis=0)
    return inside[::-1] if flip else inside
