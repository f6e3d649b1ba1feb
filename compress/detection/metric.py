"""COCO mAP of fixed-size detections against padded ground truth, with pycocotools (the COCO
protocol itself: 101-point interpolation, IoU 0.50:0.95, up to 100 detections per image)."""

from __future__ import annotations

import contextlib
import io

import numpy as np

# Rows below this score are padding or noise; COCO evaluation keeps everything above it.
SCORE_THRESHOLD = 1e-3


def kept(row: np.ndarray, threshold: float = SCORE_THRESHOLD) -> np.ndarray:
    """One image's detections (K, 6) above `threshold`, best first: the post-processing every
    output gets, whether it came from PyTorch or from a runtime."""
    rows = row[(row[:, 4] >= threshold) & (row[:, 5] >= 0)]
    return rows[np.argsort(-rows[:, 4], kind="stable")]


def coco_map(outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """mAP@[.5:.95], mAP@.5 and mAP@.75 in points for detections (N, K, 6) against labels (N, M, 5)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    truth, found = _truth(labels), _found(outputs)
    if not truth["annotations"]:
        return {"map": 0.0, "map50": 0.0, "map75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = truth
        gt.createIndex()
        if not found:
            return {"map": 0.0, "map50": 0.0, "map75": 0.0}
        evaluation = COCOeval(gt, gt.loadRes(np.asarray(found, dtype=np.float64)), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = [max(float(s), 0.0) * 100.0 for s in evaluation.stats[:3]]  # -1 means "no such objects"
    return {"map": stats[0], "map50": stats[1], "map75": stats[2]}


def _truth(labels: np.ndarray) -> dict:
    annotations, classes = [], set()
    for image, rows in enumerate(labels):
        for x1, y1, x2, y2, c in rows[rows[:, 4] >= 0]:
            w, h = float(x2 - x1), float(y2 - y1)
            annotations.append({"id": len(annotations) + 1, "image_id": image, "category_id": int(c),
                                "bbox": [float(x1), float(y1), w, h], "area": w * h, "iscrowd": 0})  # fmt: skip
            classes.add(int(c))
    return {"images": [{"id": i} for i in range(len(labels))], "annotations": annotations,
            "categories": [{"id": c} for c in sorted(classes)]}  # fmt: skip


def _found(outputs: np.ndarray) -> list[list[float]]:
    """[image, x, y, w, h, score, class] rows, as COCO.loadRes takes them."""
    rows = []
    for image, row in enumerate(outputs):
        for x1, y1, x2, y2, score, c in kept(row)[:100]:
            rows.append([image, x1, y1, x2 - x1, y2 - y1, score, c])
    return rows
