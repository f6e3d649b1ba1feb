"""`data.task: detection`: images in, a fixed-size detections tensor out (see detector.py), trained
with the detector's own losses and scored by COCO mAP on the deployed file's outputs."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from compress.detection import DETECTOR_MODELS
from compress.tasks import Task

PARITY_SCORE = 0.05  # detections compared by the export check: those a deployment would show
PARITY_IOU = 0.9


class Detection(Task):
    name, metric = "detection", "mAP"
    input_names, output_names = ("input",), ("detections",)
    logit_distillation: ClassVar[bool] = False  # detectors distil features (Detector.distill_features)
    predict_batch: ClassVar[int] = 16
    requires: ClassVar[dict[str, str]] = {"pycocotools": "'compress-edge[detection]'",
                                          "torchvision": "'compress-edge[detection]'"}  # fmt: skip

    def model_problem(self, model) -> str | None:
        if not getattr(model, "is_detector", False):
            return f"it is not a detector; detection models: {DETECTOR_MODELS}"
        return None

    def train_outputs(self, model, inputs: tuple, labels):
        return model.losses(inputs[0], targets(labels))

    def loss(self, outputs, labels, smoothing: float = 0.0):
        return sum(outputs.values())

    def distill_loss(self, outputs, teacher_outputs, temperature: float):
        raise NotImplementedError("detectors are distilled through features, not logits")

    def predict(self, model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        return super().predict(model, x, min(batch_size, self.predict_batch))

    def score(self, outputs: np.ndarray, labels: np.ndarray) -> float:
        return self.evaluate(outputs, labels)[0]

    def evaluate(self, outputs: np.ndarray, labels: np.ndarray) -> tuple[float, dict[str, float]]:
        from compress.detection.metric import coco_map

        scores = coco_map(outputs, labels)
        return scores["map"], {"mAP@.5": scores["map50"], "mAP@.75": scores["map75"]}

    def parity(self, expected: np.ndarray, got: np.ndarray, atol: float, rtol: float) -> tuple[bool, float, str]:
        """Exported detections match when every confident PyTorch detection has a runtime detection
        of its class with IoU >= 0.9 and a close score (outputs vary in length, so no elementwise test)."""
        from compress.detection.metric import kept

        missing, worst, total = 0, 0.0, 0
        for want_row, got_row in zip(expected, got, strict=True):
            want, have = kept(want_row, PARITY_SCORE), kept(got_row, PARITY_SCORE / 2)
            total += len(want)
            for box in want:
                same = have[have[:, 5] == box[5]]
                iou = _iou(box[:4], same[:, :4]) if len(same) else np.zeros(1)
                best = int(iou.argmax())
                if iou[best] < PARITY_IOU or abs(same[best, 4] - box[4]) > max(atol * 100, 0.02):
                    missing += 1
                else:
                    worst = max(worst, float(np.abs(same[best, :4] - box[:4]).max()))
        ok = missing <= 0.02 * total
        return ok, worst, f"{total - missing} of {total} detections (score >= {PARITY_SCORE}) matched"


def targets(labels) -> list[dict]:
    """Padded label rows (N, M, 5) as torchvision-style targets: boxes (n, 4) and labels (n,)."""

    found = []
    for rows in labels:
        rows = rows[rows[:, 4] >= 0]
        found.append({"boxes": rows[:, :4].float(), "labels": rows[:, 4].long()})
    return found


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1, y1 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x2, y2 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area - inter, 1e-9)
