"""Detection data: the procedural shapes set, COCO folders, box padding and memory-mapped splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from compress.data import Splits, load_data
from compress.data.rows import RowFile
from compress.data.shapes import CLASSES, shape_mask
from compress.detection.boxes import pad_targets, unpad
from compress.errors import DataError
from compress.recipe import DataSpec

SHAPES = dict(source="shapes", task="detection", channels=3)


def shapes_spec(**fields) -> DataSpec:
    return DataSpec(**{**SHAPES, "image_size": 128, "samples": 120, **fields})


def every_image(splits: Splits):
    for name in ("train", "val", "test"):
        x, y = getattr(splits, f"x_{name}"), getattr(splits, f"y_{name}")
        for i in range(len(x)):
            yield x[i], y[i]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


# ---------------------------------------------------------------------------------------- boxes


def test_targets_are_padded_to_the_most_objects_and_back():
    targets = [(np.array([[1, 2, 3, 4], [5, 6, 7, 8]]), np.array([0, 2])), (np.zeros((0, 4)), np.zeros(0, int))]
    y = pad_targets(targets)
    assert y.shape == (2, 2, 5) and y.dtype == np.float32
    np.testing.assert_array_equal(y[1], [[0, 0, 0, 0, -1]] * 2)
    boxes, classes = unpad(y[0])
    np.testing.assert_array_equal(boxes, targets[0][0]) and np.testing.assert_array_equal(classes, [0, 2])
    assert unpad(y[1])[0].shape == (0, 4) and unpad(y[1])[1].dtype == np.int64
    assert pad_targets(targets, rows=4).shape == (2, 4, 5)
    with pytest.raises(ValueError):
        pad_targets(targets, rows=1)


# ---------------------------------------------------------------------------------------- shapes


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Splits:
    return load_data(shapes_spec(), tmp_path_factory.mktemp("shapes"), seed=0)


def test_shapes_are_reproducible_from_the_seed(shapes, tmp_path):
    again = load_data(shapes_spec(), tmp_path, seed=0)
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(again, name), getattr(shapes, name))
    other = load_data(shapes_spec(), tmp_path, seed=1)
    assert not np.array_equal(other.x_train[:5], shapes.x_train[:5])


def test_shapes_format(shapes):
    assert shapes.class_names == CLASSES
    assert len(shapes.x_train) + len(shapes.x_val) + len(shapes.x_test) == 120
    assert shapes.input_shape == (3, 128, 128)
    m = shapes.y_train.shape[1]
    for name in ("train", "val", "test"):
        x, y = getattr(shapes, f"x_{name}"), getattr(shapes, f"y_{name}")
        assert x.dtype == np.float32 and y.dtype == np.float32
        assert y.shape == (len(x), m, 5)
        assert x[:].min() >= -1.0 and x[:].max() <= 1.0
    counts = [len(unpad(y)[1]) for _, y in every_image(shapes)]
    assert min(counts) >= 1 and max(counts) == m <= 5
    classes = np.concatenate([unpad(y)[1] for _, y in every_image(shapes)])
    assert set(classes) == {0, 1, 2}


@pytest.mark.parametrize("size", [128, 64])
def test_shape_boxes_fit_the_image_and_the_size_range_and_barely_overlap(shapes, size, tmp_path):
    splits = shapes if size == 128 else load_data(shapes_spec(image_size=size, samples=40), tmp_path, seed=2)
    low, high = round(16 * size / 128), round(56 * size / 128)
    for _, y in every_image(splits):
        boxes, _ = unpad(y)
        assert (boxes >= 0).all() and (boxes <= size).all()
        sides = np.concatenate([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])
        assert sides.min() >= low and sides.max() <= high
        for i in range(len(boxes)):
            for j in range(i):
                assert iou(boxes[i], boxes[j]) <= 0.3 + 1e-6


def test_a_shape_fills_its_box_tightly():
    rng = np.random.default_rng(0)
    for _ in range(200):
        cls, w, h = int(rng.integers(3)), int(rng.integers(8, 57)), int(rng.integers(8, 57))
        h = w if CLASSES[cls] == "circle" else h
        mask = shape_mask(cls, w, h, int(rng.integers(w)), bool(rng.integers(2)))
        assert mask.shape == (h, w) and mask.any(axis=0).all() and mask.any(axis=1).all()
    assert shape_mask(0, 10, 12).all()  # a rectangle fills its box
    assert not shape_mask(1, 20, 20)[0, 0]  # a circle leaves the corners


def test_shapes_stand_out_from_the_background_around_them(shapes):
    """Where nothing else is near, a rectangle's or circle's centre differs clearly from the ring of
    background just outside its box: the box is where the shape was drawn."""
    checked = 0
    for x, y in every_image(shapes):
        boxes, classes = unpad(y)
        image = np.asarray(x) * 0.5 + 0.5
        for i, ((x1, y1, x2, y2), cls) in enumerate(zip(boxes.astype(int), classes, strict=True)):
            others = np.delete(boxes, i, axis=0)
            near = [(a - 4 < x2 and c + 4 > x1 and b - 4 < y2 and d + 4 > y1) for a, b, c, d in others]
            if CLASSES[cls] == "triangle" or any(near) or min(x1, y1) < 3 or max(x2, y2) > 125:
                continue
            cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
            centre = image[:, cy - 2 : cy + 3, cx - 2 : cx + 3].reshape(3, -1).mean(1)
            around = image[:, y1 - 3 : y2 + 3, x1 - 3 : x2 + 3].copy()
            around[:, 3:-3, 3:-3] = np.nan
            ring = np.nanmean(around.reshape(3, -1), axis=1)
            assert np.linalg.norm(centre - ring) > 0.15
            checked += 1
    assert checked > 20


def test_shapes_settings_are_checked():
    with pytest.raises(ValidationError, match="channels: 3"):
        DataSpec(source="shapes", task="detection")
    with pytest.raises(ValidationError, match="image_size 64 or more"):
        DataSpec(**SHAPES, image_size=32)
    with pytest.raises(ValidationError, match="samples applies to procedural sources only"):
        DataSpec(samples=10)
    with pytest.raises(ValidationError, match="task 'detection' needs source"):
        DataSpec(task="detection", channels=3)
    assert DataSpec(**SHAPES, image_size=64).samples is None  # 1000 when loaded


# ---------------------------------------------------------------------------------------- coco

SIZES = [(80, 60), (100, 120)]  # (width, height) alternately
KNOWN = [10, 20, 30, 15]  # image 0's first box, [x, y, w, h] in its 80 x 60 pixels


def coco_json(images: list[dict], annotations: list[dict]) -> dict:
    categories = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]  # out of order on purpose
    return {"images": images, "annotations": annotations, "categories": categories}


def write_coco(root: Path, count: int = 30, layout: str = "single") -> Path:
    """`count` images with filled rectangles; layout 'single' (annotations.json), 'annotations'
    (annotations/train.json, ...) or 'root' (train.json, ... at the root)."""
    from PIL import Image, ImageDraw

    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    rng = np.random.default_rng(0)
    for i in range(count):
        w, h = SIZES[i % 2]
        image = Image.new("RGB", (w, h), (20, 20, 20))
        draw = ImageDraw.Draw(image)
        boxes = [KNOWN] if i == 0 else [] if i == 1 else [
            [int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2)), int(rng.integers(5, w // 2)),
             int(rng.integers(5, h // 2))] for _ in range(int(rng.integers(1, 4)))]  # fmt: skip
        for k, (x, y, bw, bh) in enumerate(boxes):
            draw.rectangle([x, y, x + bw - 1, y + bh - 1], fill=(240, 200, 40))
            annotations.append({"id": len(annotations) + 1, "image_id": 100 + i, "category_id": (3, 7)[k % 2],
                                "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0})  # fmt: skip
        image.save(root / "images" / f"img{i:03d}.png")
        images.append({"id": 100 + i, "file_name": f"img{i:03d}.png", "width": w, "height": h})
    annotations.append({"id": 900, "image_id": 102, "category_id": 3, "bbox": [1, 1, 20, 20], "iscrowd": 1})
    annotations.append({"id": 901, "image_id": 102, "category_id": 3, "bbox": [1, 1, 0, 20], "iscrowd": 0})
    if layout == "single":
        (root / "annotations.json").write_text(json.dumps(coco_json(images, annotations)))
        return root
    folder = root / "annotations" if layout == "annotations" else root
    folder.mkdir(exist_ok=True)
    thirds = {"train": images[:20], "val": images[20:25], "test": images[25:]}
    for part, listed in thirds.items():
        ids = {im["id"] for im in listed}
        mine = [a for a in annotations if a["image_id"] in ids]
        (folder / f"{part}.json").write_text(json.dumps(coco_json(listed, mine)))
    return root


def coco_spec(**fields) -> DataSpec:
    return DataSpec(source="coco", task="detection", path="coco", image_size=64, channels=3, **fields)


def test_coco_folder_with_one_annotation_file_is_split_by_the_seed(tmp_path):
    write_coco(tmp_path / "coco")
    splits = load_data(coco_spec(), tmp_path, seed=0)
    assert splits.class_names == ["cat", "dog"]  # category ids 3 and 7, in id order
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (19, 5, 6)
    assert splits.input_shape == (3, 64, 64) and splits.x_train.dtype == np.float32
    m = splits.y_train.shape[1]
    assert m == 3 and splits.y_val.shape[1:] == splits.y_test.shape[1:] == (m, 5)
    rows = [unpad(y) for _, y in every_image(splits)]
    written = json.loads((tmp_path / "coco" / "annotations.json").read_text())["annotations"]
    assert sum(len(c) for _, c in rows) == len(written) - 2  # the crowd box and the empty box are left out
    assert any(len(c) == 0 for _, c in rows)  # the image without annotations is kept
    assert all(set(c) <= {0, 1} for _, c in rows)
    again = load_data(coco_spec(), tmp_path, seed=0)
    np.testing.assert_array_equal(again.y_test, splits.y_test)
    assert not np.array_equal(load_data(coco_spec(), tmp_path, seed=5).y_test, splits.y_test)


@pytest.mark.parametrize("layout", ["annotations", "root"])
def test_coco_folder_with_split_files_keeps_their_split_and_scales_boxes(tmp_path, layout):
    write_coco(tmp_path / "coco", layout=layout)
    splits = load_data(coco_spec(), tmp_path, seed=0)
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (20, 5, 5)
    boxes, classes = unpad(splits.y_train[0])  # image 0, first in train.json: KNOWN in 80 x 60 pixels
    x, y, w, h = KNOWN
    np.testing.assert_allclose(boxes[0], [x * 64 / 80, y * 64 / 60, (x + w) * 64 / 80, (y + h) * 64 / 60], rtol=1e-6)
    assert classes[0] == 0  # category 3: cat
    assert len(unpad(splits.y_train[1])[1]) == 0
    image = splits.x_train[0] * 0.5 + 0.5
    x1, y1, x2, y2 = boxes[0]
    inside = image[:, int(y1) + 2 : int(y2) - 2, int(x1) + 2 : int(x2) - 2].mean(axis=(1, 2))
    np.testing.assert_allclose(inside, np.array([240, 200, 40]) / 255, atol=0.02)  # the drawn box is there
    assert image[:, 50:, 50:].max() < 0.1  # and the background elsewhere


def test_coco_images_are_read_from_disk_by_row_after_a_save_and_load(tmp_path):
    write_coco(tmp_path / "coco")
    splits = load_data(coco_spec(), tmp_path, seed=0)
    assert isinstance(splits.x_train, RowFile)  # written straight to disk while loading
    splits.save(tmp_path / "saved")
    loaded = Splits.load(tmp_path / "saved")
    assert all(isinstance(getattr(loaded, k), RowFile) for k in ("x_train", "x_val", "x_test"))
    assert all(isinstance(getattr(loaded, k), np.memmap) for k in ("y_train", "y_test"))
    np.testing.assert_array_equal(loaded.x_val[:], splits.x_val[:])
    np.testing.assert_array_equal(loaded.y_train, splits.y_train)
    assert loaded.class_names == splits.class_names
    batch = loaded.x_train[[0, 1]]
    batch += 7.0  # an in-place op on a batch (torch.from_numpy shares it) never reaches the saved file
    assert Splits.load(tmp_path / "saved").x_train[0].max() <= 1.0


def coco_error(root: Path) -> str:
    with pytest.raises(DataError) as info:
        load_data(coco_spec(), root.parent, seed=0)
    return info.value.message


def test_coco_mistakes_name_the_file(tmp_path):
    root = write_coco(tmp_path / "coco", count=12)
    annotations = root / "annotations.json"
    data = json.loads(annotations.read_text())

    def rewrite(**changes) -> None:
        annotations.write_text(json.dumps({**data, **changes}))

    annotations.rename(root / "other.json")
    assert f"{annotations}: missing" in coco_error(root)
    (root / "other.json").rename(annotations)
    rewrite(categories=None)
    assert f"{annotations}: not a COCO annotation file: no 'categories' list" in coco_error(root)
    annotations.write_text("{not json")
    assert f"{annotations}: not a COCO annotation file" in coco_error(root)
    rewrite(categories=[])
    assert f"{annotations}: no categories" in coco_error(root)
    rewrite(annotations=[*data["annotations"], {"id": 55, "image_id": 999, "category_id": 3, "bbox": [0, 0, 2, 2]}])
    assert f"{annotations}: annotation 55 has image_id 999, which no image" in coco_error(root)
    rewrite()
    (root / "images" / "img004.png").unlink()
    assert f"lists image {root / 'images' / 'img004.png'}, which is missing" in coco_error(root)
    (root / "images" / "img004.png").write_bytes(b"not an image")
    assert f"{root / 'images' / 'img004.png'}: not a readable image" in coco_error(root)


def test_coco_split_files_must_come_together(tmp_path):
    root = write_coco(tmp_path / "coco", layout="annotations")
    (root / "annotations" / "val.json").unlink()
    assert f"{root / 'annotations' / 'val.json'}: missing" in coco_error(root)


def test_coco_settings_are_checked():
    with pytest.raises(ValidationError, match="channels: 3"):
        DataSpec(source="coco", task="detection", path="c")
    with pytest.raises(ValidationError, match="needs 'path'"):
        DataSpec(source="coco", task="detection", channels=3)
    with pytest.raises(ValidationError, match="samples applies to procedural sources only"):
        DataSpec(source="coco", task="detection", path="c", channels=3, samples=5)


# ---------------------------------------------------------------------------------------- the cache


def test_the_pipeline_caches_splits_as_a_folder_of_memory_mapped_arrays(tmp_path, write):
    from compress import load_recipe
    from compress.pipeline import Pipeline

    recipe = write("r.yaml", """\
        name: r
        model: {arch: frcnn}
        data: {source: shapes, task: detection, channels: 3, image_size: 64, samples: 40}
        stages: [{type: train, epochs: 1}, {type: export}]
        """)  # fmt: skip
    pipeline = Pipeline(load_recipe(recipe), tmp_path / "out", log=lambda _: None)
    first, key = pipeline.prepare_data()
    folder = tmp_path / "out" / "cache" / f"data-{key}"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["class_names.json", *(f"{k}.npy" for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"))]
    )
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []  # no scratch left
    again, _ = pipeline.prepare_data()
    assert isinstance(first.x_train, RowFile) and isinstance(again.x_test, RowFile)
    np.testing.assert_array_equal(again.x_test[:], first.x_test[:])
    assert again.class_names == CLASSES
