"""The interface every detection model implements, so stages, export and measurement treat
Faster R-CNN, DETR and Deformable DETR alike.

A detector takes normalised images (B, 3, S, S) and returns a fixed-size detections tensor
(B, K, 6): rows (x1, y1, x2, y2, score, class) with corners in pixels of the S x S input and
classes 0..C-1; unused rows have score 0 and class -1. A fixed size keeps a batch axis on every
output, so runtimes, the measuring program and scoring handle detectors like any other model;
score thresholds stay outside the graph (compress.detection.metric.kept), applied identically to
PyTorch and runtime outputs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

# [part, node-name prefixes, op types]: how per-part latency attributes a profiled node (first match
# wins; unmatched nodes count as "other"). Prefixes are module paths as the ONNX exporter names nodes.
PartRules = list[list]


@dataclass
class PruningScope:
    """What `prune` may shrink in a detector: a submodule traced on its own, the layers whose output
    width must stay (they feed fixed-width heads) and how to read the submodule's output."""

    module: nn.Module
    example: tuple  # the submodule's positional inputs for tracing, built from a batch of images
    ignored: list[nn.Module] = field(default_factory=list)
    output_transform: object = None  # callable(output) -> tensor(s) for torch-pruning, or None


class Detector(nn.Module):
    """Base class of detection models in compress (see the module docstring for the output)."""

    is_detector: ClassVar[bool] = True
    exporter: ClassVar[str] = "torchscript"  # the ONNX exporter that handles this family
    opset: ClassVar[int] = 17
    dynamic_batch: ClassVar[bool] = False  # the graph handles more than one image per call
    parts: ClassVar[PartRules] = []
    float_ops: ClassVar[tuple[str, ...]] = ()  # ONNX op types left in float by INT8 quantization

    def __init__(self, max_detections: int = 100) -> None:
        super().__init__()
        self.max_detections = max_detections

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def losses(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Training losses for a batch; targets hold `boxes` (n, 4) xyxy pixels and `labels` (n,) 0..C-1."""
        raise NotImplementedError

    def pruning_scope(self, images: torch.Tensor) -> PruningScope:
        """One scope for the whole detector: several parts go into one module traced together."""
        raise NotImplementedError

    def distill_features(self) -> list[str]:
        """Module names whose outputs feature distillation matches by default (same in teacher and student)."""
        return []

    def export_context(self):
        """A context the ONNX export runs in (e.g. swapping a data-dependent branch for a traceable one)."""
        return contextlib.nullcontext()


def pad_detections(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, k: int) -> torch.Tensor:
    """One image's detections as exactly `k` rows (x1, y1, x2, y2, score, class), padded with score 0
    and class -1; traceable, so the exported graph pads too."""
    rows = torch.cat([boxes, scores[:, None], classes.to(boxes.dtype)[:, None]], 1)
    pad = torch.zeros(k, 6, dtype=boxes.dtype, device=boxes.device)
    pad[:, 5] = -1
    return torch.cat([rows, pad], 0)[:k]
