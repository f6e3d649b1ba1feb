"""Faster R-CNN (and torchvision's other two-stage and one-stage detectors) as compress Detectors.

`frcnn` in the zoo is a small Faster R-CNN that learns the `shapes` set on a CPU in minutes: a
plain conv-BN backbone with a two-level feature pyramid, RoI budgets cut for CPU training.
`torchvision:fasterrcnn_*` (and `retinanet_*`, `fcos_*`) wrap torchvision's own models, built
without any download; weights come from a local checkpoint.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from compress.detection.detector import Detector, PruningScope, pad_detections

# Compress's images are (p - mean) / std of [0, 1] pixels (data.normalize; by default 0.5 and 0.5);
# torchvision normalises with its own mean and std, so it gets the mean and std that turn our
# images into ImageNet-normalised ones.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class TorchvisionDetector(Detector):
    """A torchvision detector (`model`, with its own transform, heads and NMS) behind the Detector
    interface. Exported with the TorchScript exporter at batch 1: torchvision's batched NMS and
    per-image loops are data-dependent."""

    exporter, opset, dynamic_batch = "torchscript", 17, False
    parts = [
        ["postprocess", [], ["NonMaxSuppression", "RoiAlign", "TopK"]],
        ["backbone", ["/model/backbone/body"], []],
        ["neck", ["/model/backbone/fpn"], []],
        ["heads", ["/model/rpn/head", "/model/roi_heads/box_head", "/model/roi_heads/box_predictor", "/model/head"], []],
        # anchors, box decoding, proposal and detection selection, padding to max_detections
        ["postprocess", ["/model/rpn", "/model/roi_heads", "/model/anchor_generator", "/model/postprocess"], []],
        ["preprocess", ["/model/transform"], []],
    ]  # fmt: skip
    float_ops = ("NonMaxSuppression", "RoiAlign", "TopK")
    # modules whose shapes follow the class count; pretrained weights skip them when it differs
    head_modules = ("model.roi_heads.box_predictor", "model.head.classification_head.cls_logits")

    def __init__(self, model: nn.Module, image_size: int, max_detections: int = 100,
                 data_norm: tuple[list[float], list[float]] = ([0.5] * 3, [0.5] * 3)) -> None:  # fmt: skip
        super().__init__(max_detections)
        self.model = model
        t = model.transform
        t.min_size, t.max_size = (image_size,), image_size  # the data is already at its size
        # Inputs are x = (p - dm) / ds; torchvision computes (x - m') / s' and should get (p - m) / s,
        # so m' = (m - dm) / ds and s' = s / ds (the default data.normalize: dm = ds = 0.5).
        dm, ds = (_three(v) for v in data_norm)
        t.image_mean = [(m - a) / b for m, a, b in zip(IMAGENET_MEAN, dm, ds, strict=True)]
        t.image_std = [s / b for s, b in zip(IMAGENET_STD, ds, strict=True)]
        for holder in (getattr(model, "roi_heads", None), model):
            if holder is not None and hasattr(holder, "detections_per_img"):
                holder.detections_per_img = max_detections
        if hasattr(model, "rpn"):
            # A weakly trained model can score every proposal below the default 0.05; zero proposals
            # then break the exported graph (a Reshape fails in ONNX Runtime), so keep them all.
            model.rpn.score_thresh = 0.0

    def export_context(self):
        stack = contextlib.ExitStack()
        stack.enter_context(traceable_nms(self.model.transform.max_size))
        stack.enter_context(gathered_levels())
        return stack

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        found = self.model(list(images.unbind(0)))
        return torch.stack([pad_detections(d["boxes"], d["scores"], d["labels"] - 1, self.max_detections)
                            for d in found])  # fmt: skip

    def losses(self, images, targets):
        shifted = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets]  # 0 is background
        return self.model(list(images.unbind(0)), shifted)

    def pruning_scope(self, images: torch.Tensor) -> PruningScope:
        prunable = PrunableParts(self.model)
        # The heads' outputs (scores, box offsets per anchor and class) keep their width; everything
        # before them shrinks, the pyramid too: RoIAlign, a fixed cost of every image, scales with it.
        ignored = [m for m in prunable.outputs() if isinstance(m, (nn.Conv2d, nn.Linear))]
        return PruningScope(prunable, (images,), ignored)

    def distill_features(self) -> list[str]:
        fpn = getattr(self.model.backbone, "fpn", None)
        if fpn is None:
            return []
        return [f"model.backbone.fpn.layer_blocks.{i}" for i in range(len(fpn.layer_blocks))]


@contextlib.contextmanager
def traceable_nms(image_size: int):
    """torchvision's batched NMS as one NonMaxSuppression without the scripted empty-input branch:
    that branch exports as `If` nodes, which NNCF cannot quantize around ("Could not find a node
    ... in NNCFGraph"). Boxes are clipped to the image before NMS, so a fixed per-class offset of
    the image size keeps classes apart exactly as the data-dependent one does."""
    from torchvision.ops import boxes as box_ops

    def batched_nms(boxes, scores, idxs, iou_threshold: float):
        offsets = idxs.to(boxes.dtype) * float(image_size + 1)
        return box_ops.nms(boxes + offsets[:, None], scores, iou_threshold)

    original, box_ops.batched_nms = box_ops.batched_nms, batched_nms
    try:
        yield
    finally:
        box_ops.batched_nms = original


@contextlib.contextmanager
def gathered_levels():
    """torchvision's exported multi-level RoIAlign merges the levels' results with a ScatterElements
    over every pooled value (RoIs x channels x 7 x 7), which in ONNX Runtime costs about as much as
    RoIAlign itself; concatenating the levels and gathering whole RoIs back into order is the
    same result for a copy per RoI."""
    from torchvision.ops import poolers

    def merge(levels: torch.Tensor, results: list[torch.Tensor]) -> torch.Tensor:
        # Each RoI's row in the concatenation: the RoIs of lower levels, then its rank on its own
        # level (a running count, so no sort: an argsort would add a TopK to the graph).
        row, start = torch.zeros_like(levels), torch.zeros((), dtype=levels.dtype)
        for level in range(len(results)):
            here = (levels == level).to(levels.dtype)
            row = row + here * (start + torch.cumsum(here, 0) - 1)
            start = start + here.sum()
        return torch.cat(results)[row]

    original, poolers._onnx_merge_levels = poolers._onnx_merge_levels, merge
    try:
        yield
    finally:
        poolers._onnx_merge_levels = original


class PrunableParts(nn.Module):
    """The detector's layers that pruning may shrink, as one module torch-pruning traces: the
    backbone with its pyramid, the RPN head and the RoI box head with its predictor (the box head's
    fully connected layers hold most of a small Faster R-CNN's compute: one pass per proposal).
    Holds the detector's own modules, so pruning them prunes the detector."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.backbone = model.backbone
        rpn, roi = getattr(model, "rpn", None), getattr(model, "roi_heads", None)
        self.rpn_head = rpn.head if rpn is not None else getattr(model, "head", None)
        self.box_head = roi.box_head if roi is not None else None
        self.box_predictor = roi.box_predictor if roi is not None else None
        size = roi.box_roi_pool.output_size if roi is not None else 7
        self.pool_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)

    def outputs(self) -> list[nn.Module]:
        """The last layer of each head: its width is fixed by anchors and classes."""
        heads = [h for h in (self.rpn_head, self.box_predictor) if h is not None]
        return [m for h in heads for m in h.modules() if not list(m.children()) and _feeds_output(h, m)]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        features = list(self.backbone(images).values())
        out = list(features)
        if self.rpn_head is not None:
            out += _tensors(self.rpn_head(features))
        if self.box_head is not None:
            # The box head reads RoIAlign's pooling of whichever level an RoI maps to: pooling every
            # level into its input ties the pyramid's channels to its first layer, on all levels alike.
            pooled = sum(F.adaptive_avg_pool2d(f, self.pool_size) for f in features)
            out += list(self.box_predictor(self.box_head(pooled)))
        return out


def _feeds_output(head: nn.Module, module: nn.Module) -> bool:
    """Whether `module` is one of `head`'s output layers (named for what they predict)."""
    names = {id(m): n for n, m in head.named_modules()}
    name = names.get(id(module), "")
    return any(key in name for key in ("cls_logits", "bbox_pred", "cls_score", "bbox_reg", "bbox_ctrness"))


def _tensors(value) -> list[torch.Tensor]:
    """Every tensor in a head's output (a tensor, or lists / dicts of them)."""
    if isinstance(value, torch.Tensor):
        return [value]
    items = value.values() if isinstance(value, dict) else value
    return [t for item in items for t in _tensors(item)]


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallBody(nn.Module):
    """Four conv-BN stages (strides 4, 4, 8, 16) returning the last two as pyramid levels."""

    def __init__(self, widths: tuple[int, ...]) -> None:
        super().__init__()
        w = widths
        self.stem = nn.Sequential(_conv_bn(3, w[0], 2), _conv_bn(w[0], w[0], 1))
        self.layer1 = nn.Sequential(_conv_bn(w[0], w[1], 2), _conv_bn(w[1], w[1], 1))
        self.layer2 = nn.Sequential(_conv_bn(w[1], w[2], 2), _conv_bn(w[2], w[2], 1))
        self.layer3 = nn.Sequential(_conv_bn(w[2], w[3], 2), _conv_bn(w[3], w[3], 1))

    def forward(self, x: torch.Tensor) -> OrderedDict:
        c2 = self.layer2(self.layer1(self.stem(x)))
        return OrderedDict([("0", c2), ("1", self.layer3(c2))])


class SmallBackbone(nn.Module):
    """`body` plus a two-level feature pyramid, named as torchvision's BackboneWithFPN is."""

    def __init__(self, widths: tuple[int, ...], channels: int) -> None:
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork

        self.body = SmallBody(widths)
        self.fpn = FeaturePyramidNetwork([widths[2], widths[3]], channels)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> OrderedDict:
        return self.fpn(self.body(x))


def small_frcnn(in_channels: int, num_classes: int, image_size: int, widths: tuple[int, ...] = (16, 32, 64, 96),
                channels: int = 64, head: int = 256, max_detections: int = 100) -> Detector:  # fmt: skip
    """The zoo's Faster R-CNN: ~1.2 M parameters at the defaults, anchors for 16-64 px objects at
    128 px (scaled with the image size). RoI budgets are cut for CPUs and for scenes of a few objects
    (torchvision's defaults are sized for COCO): 150 proposals and 64 sampled RoIs per image in
    training, where RoIAlign's backward pass dominates a step, and 50 proposals at inference."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    scale = image_size / 128
    anchors = AnchorGenerator(sizes=tuple((round(a * scale), round(b * scale)) for a, b in ((16, 32), (48, 64))),
                              aspect_ratios=((0.5, 1.0, 2.0),) * 2)  # fmt: skip
    model = FasterRCNN(SmallBackbone(tuple(widths), channels), box_predictor=FastRCNNPredictor(head, num_classes + 1),
                       rpn_anchor_generator=anchors, box_roi_pool=MultiScaleRoIAlign(["0", "1"], 7, 2),
                       box_head=TwoMLPHead(channels * 7 * 7, head),
                       rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=150,
                       rpn_pre_nms_top_n_test=150, rpn_post_nms_top_n_test=50,
                       box_batch_size_per_image=64)  # fmt: skip
    return TorchvisionDetector(model, image_size, max_detections)


def _three(values: list[float]) -> list[float]:
    return list(values) * 3 if len(values) == 1 else list(values)


def torchvision_detector(name: str, num_classes: int, image_size: int, options: dict,
                         data_norm: tuple[list[float], list[float]] = ([0.5] * 3, [0.5] * 3)) -> Detector:  # fmt: skip
    """A torchvision detection model, random init (no backbone weights are downloaded)."""
    import torchvision

    options = dict(options)
    max_detections = options.pop("max_detections", 100)
    model = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=num_classes + 1,
                                         **options)  # fmt: skip
    return TorchvisionDetector(model, image_size, max_detections, data_norm)


def is_torchvision_detector(name: str) -> bool:
    from compress.models.sources import DETECTOR_FAMILIES

    return name.startswith(DETECTOR_FAMILIES)
