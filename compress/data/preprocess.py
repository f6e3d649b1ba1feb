"""How pixels become model inputs, the same in training, measurement and deployment: [0, 1] pixels
(RGB, or grey for one channel), optionally resized so the shorter side is `data.resize` and
centre-cropped to `data.image_size` (torchvision's classification transform), then normalised as
(x - mean) / std with `data.normalize`. The default, mean 0.5 and std 0.5, centres pixels on zero;
pretrained models usually expect their training set's statistics (`normalize: imagenet`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from compress.recipe.schema import DataSpec

# name -> (mean, std) per RGB channel; a one-channel input uses their averages
PRESETS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "default": ((0.5,), (0.5,)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "none": ((0.0,), (1.0,)),
}


def mean_std(spec: DataSpec) -> tuple[list[float], list[float]]:
    """The mean and std, one value per input channel, that `spec.normalize` names or gives."""
    value = spec.normalize
    mean, std = PRESETS[value] if isinstance(value, str) else (value.mean, value.std)
    return _per_channel(mean, spec.channels), _per_channel(std, spec.channels)


def _per_channel(values, channels: int) -> list[float]:
    values = [float(v) for v in values]
    if len(values) == channels:
        return values
    return [sum(values) / len(values)] * channels if channels == 1 else values * channels


def resized(x, spec: DataSpec):
    """A float NCHW torch batch at the spec's size: with `resize`, shorter side to it then a centre
    crop of image_size; without, stretched to image_size square (as before `resize` existed)."""
    import torch.nn.functional as F

    size = spec.image_size
    h, w = x.shape[-2:]
    if spec.resize:
        scale = spec.resize / min(h, w)
        new = (max(size, round(h * scale)), max(size, round(w * scale)))
        if new != (h, w):
            x = F.interpolate(x, size=new, mode="bilinear", align_corners=False, antialias=True)
        top, left = (new[0] - size) // 2, (new[1] - size) // 2
        return x[..., top : top + size, left : left + size]
    if h != size or w != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x


def normalised(x, spec: DataSpec):
    import torch

    mean, std = mean_std(spec)
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def crop_box(width: int, height: int, spec: DataSpec) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """For one image read from a file: (resized width and height, crop box) of the spec's resize and crop."""
    size = spec.image_size
    if not spec.resize:
        return (size, size), (0, 0, size, size)
    scale = spec.resize / min(width, height)
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return new, (left, top, left + size, top + size)


def preprocessing(spec: DataSpec, text: bool) -> dict[str, Any] | None:
    """What a deployment must do to an image to feed the exported model (None for token inputs)."""
    if text:
        return None
    mean, std = mean_std(spec)
    return {
        "layout": "NCHW",
        "dtype": "float32",
        "channels": "RGB" if spec.channels == 3 else "grey",
        "scale": "pixel / 255",
        "resize": spec.resize,
        "resize_means": "shorter side, bilinear" if spec.resize else "both sides, bilinear",
        "crop": spec.image_size if spec.resize else None,
        "image_size": spec.image_size,
        "mean": mean,
        "std": std,
        "formula": "(pixel / 255 - mean) / std, per channel",
    }
