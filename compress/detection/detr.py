"""Hugging Face DETR (Carion et al., 2020) and Deformable DETR (Zhu et al., 2021) as compress detectors.

`DetrDetector` wraps a `DetrForObjectDetection` and `DeformableDetrDetector` a
`DeformableDetrForObjectDetection`, built from a config with random weights (the zoo's `detr` and
`deformable-detr`, sized by `build`) or read from a local folder (`hf:<folder>`, `from_pretrained`).

The graph takes compress images ((p - 0.5) / 0.5 of [0, 1] pixels), turns them into the ImageNet
normalisation the Hugging Face models expect with one affine map per channel, and decodes the
queries into the detections tensor of compress.detection.detector inside the `postprocess`
submodule: one row per query, in query order (not sorted), corners in pixels of the input.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from compress.detection.detector import Detector, PruningScope

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FAMILIES = {"detr": "DetrForObjectDetection", "deformable_detr": "DeformableDetrForObjectDetection"}
BACKBONES = {  # Hugging Face ResNet stages: (block type, blocks per stage, stage widths)
    "resnet10": ("basic", [1, 1, 1, 1], [64, 128, 256, 512]),
    "resnet18": ("basic", [2, 2, 2, 2], [64, 128, 256, 512]),
    "resnet34": ("basic", [3, 4, 6, 3], [64, 128, 256, 512]),
    "resnet50": ("bottleneck", [3, 4, 6, 3], [256, 512, 1024, 2048]),
}


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm with fixed statistics and affine parameters, as the Hugging Face backbones use, but a
    BatchNorm2d subclass: torch-pruning shrinks it with the convolution before it, and it exports as
    BatchNormalization (folded into the convolution)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


def swap_batch_norms(module: nn.Module, frozen: bool = True) -> None:
    """Replace the Hugging Face frozen batch norms, which torch-pruning does not know (it would leave
    their buffers whole), by FrozenBatchNorm2d (same buffers, same arithmetic) or, for training from
    scratch (`frozen=False`), by a plain BatchNorm2d holding the same values."""
    for name, child in module.named_children():
        if type(child).__name__.endswith("FrozenBatchNorm2d") and not isinstance(child, nn.BatchNorm2d):
            new = (FrozenBatchNorm2d if frozen else nn.BatchNorm2d)(child.weight.numel(), eps=1e-5)
            with torch.no_grad():
                for key in ("weight", "bias", "running_mean", "running_var"):
                    getattr(new, key).copy_(getattr(child, key))
            new.weight.requires_grad_(not frozen)
            new.bias.requires_grad_(not frozen)
            setattr(module, name, new.to(child.weight.device).train(module.training))
        else:
            swap_batch_norms(child, frozen)


class Renormalize(nn.Module):
    """compress images, x = (p - 0.5) / 0.5, to the normalisation of the Hugging Face models (ImageNet
    statistics unless a folder's preprocessor_config.json says otherwise), (p - mean) / std =
    x * 0.5 / std + (0.5 - mean) / std: exact, one multiply-add per channel. Other channel counts
    than RGB have no ImageNet statistics and pass unchanged."""

    def __init__(self, channels: int, mean=None, std=None) -> None:
        super().__init__()
        rgb = channels == 3
        mean = mean or (IMAGENET_MEAN if rgb else (0.5,) * channels)
        std = std or (IMAGENET_STD if rgb else (0.5,) * channels)
        self.register_buffer("scale", torch.tensor([0.5 / s for s in std]).view(1, -1, 1, 1))
        self.register_buffer(
            "shift", torch.tensor([(0.5 - m) / s for m, s in zip(mean, std, strict=True)]).view(1, -1, 1, 1)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images * self.scale + self.shift


class DetrPostprocess(nn.Module):
    """Queries to detections rows (x1, y1, x2, y2, score, class): DETR's softmax without the
    no-object class, or Deformable DETR's per-class sigmoid (focal loss); the best class per query."""

    def __init__(self, focal: bool) -> None:
        super().__init__()
        self.focal = focal

    def forward(self, logits: torch.Tensor, boxes: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        probs = logits.sigmoid() if self.focal else logits.softmax(-1)[..., :-1]
        scores, classes = probs.max(-1)
        height, width = images.shape[-2], images.shape[-1]
        cx, cy, w, h = boxes.unbind(-1)  # centre and size as fractions of the image
        corners = [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]
        return torch.stack([*corners, scores, classes.to(boxes.dtype)], -1)


def inner_convs(backbone: nn.Module) -> list[nn.Conv2d]:
    """Convolutions inside residual blocks whose output feeds only the next convolution of the block
    (Hugging Face ResNet: every `layer` entry but the last); their width is free to shrink."""
    found = []
    for block in backbone.modules():
        if isinstance(getattr(block, "layer", None), nn.Sequential) and hasattr(block, "shortcut"):
            found += [c for inner in list(block.layer)[:-1] for c in inner.modules() if isinstance(c, nn.Conv2d)]
    return found


def model_outputs(out) -> list[torch.Tensor]:
    """What torch-pruning traces back from: the Hugging Face model's class logits and boxes."""
    return [out.logits, out.pred_boxes]


class DetrDetector(Detector):
    """A `DetrForObjectDetection` behind the Detector interface (see the module docstring)."""

    exporter = "torchscript"
    opset = 17
    dynamic_batch = True
    # TorchScript names nodes by module path, and a module's second call gets a suffix
    # (/detr/model/position_embedding_1/...): prefixes stop at the module name.
    parts = [
        ["backbone", ["/normalize", "/detr/model/backbone"], []],
        ["encoder", ["/detr/model/input_projection", "/detr/model/position_embedding", "/detr/model/encoder"], []],
        ["decoder", ["/detr/model/decoder", "/detr/model/query_position_embeddings"], []],
        ["heads", ["/detr/class_labels_classifier", "/detr/bbox_predictor", "/detr/Sigmoid"], []],
        ["postprocess", ["/postprocess"], []],
    ]
    # Attention and score normalisation, LayerNorm over the residual stream, and every op type of the
    # decoding: one QDQ pair on the final Concat would give scores, classes and pixels one scale.
    float_ops = ("Softmax", "Sigmoid", "LayerNormalization", "ReduceMax", "ArgMax", "Add", "Sub", "Mul", "Div",
                 "Concat", "Split", "Slice", "Squeeze", "Unsqueeze")  # fmt: skip
    focal = False

    def __init__(self, model: nn.Module, mean=None, std=None, frozen_batch_norm: bool = True) -> None:
        super().__init__(max_detections=model.config.num_queries)
        swap_batch_norms(model, frozen_batch_norm)
        self.detr = model
        self.normalize = Renormalize(model.config.num_channels, mean, std)
        self.postprocess = DetrPostprocess(self.focal)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.detr(pixel_values=self.normalize(images))
        return self.postprocess(out.logits, out.pred_boxes, images)

    def losses(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The Hugging Face set loss (Hungarian matching; class, L1 and GIoU box terms); `loss` is their
        weighted sum, the other entries are the terms."""
        height, width = images.shape[-2:]
        scale = torch.tensor([width, height, width, height], dtype=images.dtype, device=images.device)
        labels = []
        for target in targets:
            x1, y1, x2, y2 = (target["boxes"].to(images) / scale).unbind(-1)
            boxes = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], -1)
            labels.append({"class_labels": target["labels"].long().to(images.device), "boxes": boxes})
        out = self.detr(pixel_values=self.normalize(images), labels=labels)
        return {"loss": out.loss, **{k: v for k, v in out.loss_dict.items() if k.startswith("loss")}}

    def pruning_scope(self, images: torch.Tensor) -> PruningScope:
        """The Hugging Face model, traced whole on ImageNet-normalised images. Prunable: the encoder
        and decoder FFNs (fc1 outputs, fc2 inputs), the attention heads of DETR-style attention (see
        compress.models.attention), the box MLP's hidden width and the backbone's inner channels (all
        but the last convolution of each residual block). Kept whole: every layer writing the d_model
        residual stream, the class and box outputs, Deformable DETR's multi-scale deformable
        attention (its sampling offsets and weights are laid out per head, level and point) and the
        backbone's stage widths, so the input projections see the features they were trained on."""
        prunable = set(map(id, inner_convs(self.detr.model.backbone)))
        for module in self.detr.modules():
            if isinstance(getattr(module, "fc1", None), nn.Linear) and hasattr(module, "fc2"):
                prunable.add(id(module.fc1))  # FFN hidden width
            elif type(module).__name__.endswith("MLPPredictionHead"):
                prunable.update(id(layer) for layer in module.layers[:-1])  # box MLP hidden width
            elif all(isinstance(getattr(module, a, None), nn.Linear) for a in ("q_proj", "k_proj", "v_proj")):
                prunable.update(id(p) for p in (module.q_proj, module.k_proj, module.v_proj))  # whole heads
        layers = (nn.Linear, nn.Conv2d, nn.Embedding)
        kept = [m for m in self.detr.modules() if isinstance(m, layers) and id(m) not in prunable]
        return PruningScope(self.detr, (self.normalize(images),), kept, output_transform=model_outputs)

    def distill_features(self) -> list[str]:
        return ["detr.model.decoder.layernorm"]


class DeformableDetrDetector(DetrDetector):
    """A `DeformableDetrForObjectDetection` behind the Detector interface (see the module docstring).

    The TorchScript exporter at opset 17 handles it: GridSample stays float32 and ONNX Runtime 1.32
    and OpenVINO 2026.4 match PyTorch (torch 2.14). The dynamo exporter (opset 18) works too, but
    takes about six times longer and names nodes node_<Op>_<n>, which the module-path part rules
    cannot attribute."""

    parts = [
        ["backbone", ["/normalize", "/detr/model/backbone"], []],
        ["encoder", ["/detr/model/input_proj", "/detr/model/position_embedding", "/detr/model/encoder"], []],
        ["decoder", ["/detr/model/decoder", "/detr/model/reference_points", "/detr/model/Sigmoid"], []],
        ["heads", ["/detr/class_embed", "/detr/bbox_embed", "/detr/Sigmoid"], []],
        ["postprocess", ["/postprocess"], []],
    ]
    # Also the sampling: locations (inverse sigmoid: Clip, Log; reference updates: Where, ScatterND)
    # and the bilinear GridSample itself stay in float.
    float_ops = (*DetrDetector.float_ops, "GridSample", "Clip", "Log", "Where", "ScatterND")
    focal = True

    def distill_features(self) -> list[str]:
        return [f"detr.model.decoder.layers.{len(self.detr.model.decoder.layers) - 1}"]


def build(family: str, num_classes: int, in_channels: int = 3, d_model: int = 128, encoder_layers: int = 2,
          decoder_layers: int = 2, queries: int = 25, heads: int = 4, ffn: int = 256, backbone: str = "resnet18",
          levels: int = 3) -> DetrDetector:  # fmt: skip
    """A randomly initialised detector of `family` ("detr" or "deformable_detr") with a Hugging Face
    ResNet backbone built from its config (no download); Deformable DETR reads `levels` feature maps."""
    import transformers as hf

    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone '{backbone}'; one of {', '.join(BACKBONES)}")
    layer_type, depths, widths = BACKBONES[backbone]
    stages = ["stage4"] if family == "detr" else ["stage2", "stage3", "stage4"][-min(levels, 3) :]
    resnet = hf.ResNetConfig(num_channels=in_channels, layer_type=layer_type, depths=depths, hidden_sizes=widths,
                             embedding_size=64, out_features=stages)  # fmt: skip
    common = dict(backbone_config=resnet, num_channels=in_channels, d_model=d_model, encoder_layers=encoder_layers,
                  decoder_layers=decoder_layers, encoder_attention_heads=heads, decoder_attention_heads=heads,
                  encoder_ffn_dim=ffn, decoder_ffn_dim=ffn, num_queries=queries, num_labels=num_classes)  # fmt: skip
    if family == "detr":
        config, cls, wrapper = hf.DetrConfig(**common), hf.DetrForObjectDetection, DetrDetector
    else:
        config = hf.DeformableDetrConfig(**common, num_feature_levels=levels)
        cls, wrapper = hf.DeformableDetrForObjectDetection, DeformableDetrDetector
    config._attn_implementation = "eager"  # plain MatMul/Softmax in ONNX, per-head shapes the pruner can change
    model = cls(config)
    model.model.unfreeze_backbone()  # nothing pretrained to keep: the whole backbone trains, batch norms too
    return wrapper(model, frozen_batch_norm=False)


def from_pretrained(path: Path, num_classes: int) -> DetrDetector:
    """A detector from a local folder (config.json model_type "detr" or "deformable_detr"); a class
    head of another size is re-initialised for `num_classes` classes."""
    import transformers
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    cls = getattr(transformers, FAMILIES[config.model_type])
    options = {}
    if config.num_labels != num_classes:
        warnings.warn(f"{path}: the checkpoint's class head has {config.num_labels} classes and the data "
                      f"{num_classes}; re-initialising the class head", stacklevel=2)  # fmt: skip
        options = {"num_labels": num_classes, "ignore_mismatched_sizes": True}
    try:
        model = cls.from_pretrained(str(path), local_files_only=True, attn_implementation="eager", **options)
    except ImportError as exc:  # a timm backbone without timm installed
        from compress.errors import StageError

        raise StageError(f"{path}: {' '.join(str(exc).split())}", hint="install what it names, or save the "
                         "model with a transformers ResNet backbone (use_timm_backbone=False)") from None  # fmt: skip
    wrapper = DeformableDetrDetector if config.model_type == "deformable_detr" else DetrDetector
    return wrapper(model.eval(), *image_statistics(path))


def image_statistics(path: Path) -> tuple:
    """(mean, std) of the folder's image processor when it normalises with its own; else (None, None)."""
    try:
        processor = json.loads((path / "preprocessor_config.json").read_text())
    except (OSError, ValueError):
        return None, None
    if not isinstance(processor, dict):
        return None, None
    if processor.get("do_normalize") is False:
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return processor.get("image_mean"), processor.get("image_std")
