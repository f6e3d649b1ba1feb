"""Training-time image augmentation: random shifts, random resized crops and horizontal flips.

Applied to each training batch where it already is (CPU or GPU) with one batched affine resampling,
so it costs a fraction of the forward pass and needs no data-loading workers. The random draws come
from the training loop's numpy generator, which the epoch checkpoint saves, so a resumed training
augments exactly as an uninterrupted one. Evaluation never sees augmented inputs.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field, model_validator

from compress.config import Strict

if TYPE_CHECKING:
    import torch


class Augment(Strict):
    """What each training image may go through; every field off by default."""

    shift: int = Field(0, ge=0, le=256, description="random translation of up to this many pixels each way")
    crop_scale: tuple[float, float] | None = Field(
        None, description="random resized crop: the share of the image's area a crop keeps, e.g. [0.35, 1.0]"
    )
    flip: bool = Field(False, description="mirror half the images left to right (not for text or digits)")

    @model_validator(mode="after")
    def _scale_range(self) -> Augment:
        if self.crop_scale and not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError("crop_scale is [smallest, largest] area share, with 0 < smallest <= largest <= 1")
        return self

    @property
    def active(self) -> bool:
        return bool(self.shift or self.crop_scale or self.flip)


AugmentSetting = Literal["auto", "none"] | Augment
ASPECT = (3 / 4, 4 / 3)  # crop aspect ratios, as torchvision's RandomResizedCrop


def resolve(setting: AugmentSetting, default: dict | None, augmentable: bool) -> Augment | None:
    """The augmentation a stage applies: `auto` takes the data source's default (None for sources
    whose images must not move or flip), `none` nothing. Explicit settings on inputs that are not
    images are a ValueError."""
    if setting == "none" or (setting == "auto" and not (default and augmentable)):
        return None
    chosen = Augment(**default) if setting == "auto" else setting
    if not augmentable and chosen.active:
        raise ValueError("augment applies to image classification only; set augment: none for this task")
    return chosen if chosen.active else None


def augment(x: torch.Tensor, cfg: Augment, rng: np.random.Generator, rows: slice | None = None,
            batch: int | None = None) -> torch.Tensor:  # fmt: skip
    """`x` (N, C, H, W) with each image shifted, cropped and flipped at random, sampled bilinearly
    from the original (edges repeat where a shift uncovers them). In data-parallel training `x` is
    a rank's `rows` of a batch of `batch` images: the draws are made for the whole batch, so every
    rank's generator stays in step and each image is augmented as it would be in one process."""
    import torch

    _, _, h, w = x.shape
    n = batch or len(x)
    scale_x, scale_y = np.ones(n), np.ones(n)
    if cfg.crop_scale:
        area = rng.uniform(*cfg.crop_scale, n)
        aspect = np.exp(rng.uniform(math.log(ASPECT[0]), math.log(ASPECT[1]), n))
        scale_x, scale_y = np.minimum(1, np.sqrt(area * aspect)), np.minimum(1, np.sqrt(area / aspect))
    # A crop's centre may move as far as keeps it inside the image; a shift moves it further.
    centre_x = rng.uniform(-1, 1, n) * (1 - scale_x) + 2 * rng.integers(-cfg.shift, cfg.shift + 1, n) / w
    centre_y = rng.uniform(-1, 1, n) * (1 - scale_y) + 2 * rng.integers(-cfg.shift, cfg.shift + 1, n) / h
    mirror = np.where(rng.random(n) < 0.5, -1.0, 1.0) if cfg.flip else np.ones(n)
    theta = np.zeros((n, 2, 3), np.float32)
    theta[:, 0, 0], theta[:, 0, 2] = scale_x * mirror, centre_x
    theta[:, 1, 1], theta[:, 1, 2] = scale_y, centre_y
    theta = torch.from_numpy(theta if rows is None else theta[rows]).to(x.device, x.dtype)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
