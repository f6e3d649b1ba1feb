"""Training augmentation: what each transform does to an image, which sources get it by default,
and that distillation shows the teacher the augmented batch the student saw."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compress.data import data_source
from compress.models import build_model
from compress.recipe import ModelSpec
from compress.stages.augment import Augment, augment, resolve
from compress.stages.distillation import distillation
from compress.stages.options import Distill, TrainingOptions
from compress.tasks import get_task
from tests.test_finetune import artifact
from tests.test_prune import make_splits, stage_ctx


def images(n: int = 16, size: int = 12) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(1).standard_normal((n, 3, size, size)).astype(np.float32))


def shifted(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """`x` moved right by dx and down by dy pixels, edge pixels repeated into the uncovered band."""
    h, w = x.shape[-2:]
    rows = torch.clamp(torch.arange(h) - dy, 0, h - 1)
    cols = torch.clamp(torch.arange(w) - dx, 0, w - 1)
    return x[..., rows, :][..., cols]


def test_shift_moves_each_image_by_whole_pixels_within_the_limit():
    x = images()
    out = augment(x, Augment(shift=2), np.random.default_rng(0))
    moves = set()
    for original, moved in zip(x, out, strict=True):
        match = [(dx, dy) for dx in range(-2, 3) for dy in range(-2, 3)
                 if torch.allclose(shifted(original, dx, dy), moved, atol=1e-5)]  # fmt: skip
        assert match, "an image was not a whole-pixel shift of its original"
        moves.add(match[0])
    assert len(moves) > 4  # each image draws its own shift


def test_flip_mirrors_about_half_the_images_and_leaves_the_rest():
    x = images(64)
    out = augment(x, Augment(flip=True), np.random.default_rng(0))
    mirrored = [torch.allclose(o, i.flip(-1), atol=1e-5) for i, o in zip(x, out, strict=True)]
    kept = [torch.allclose(o, i, atol=1e-5) for i, o in zip(x, out, strict=True)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True)) and 16 < sum(mirrored) < 48


def test_a_crop_of_a_quarter_of_the_area_enlarges_what_it_keeps():
    ramp = torch.linspace(0, 1, 32).repeat(4, 1, 32, 1)  # brightness rises left to right
    out = augment(ramp, Augment(crop_scale=(0.25, 0.25)), np.random.default_rng(0))
    # Each output pixel now spans the crop's width share (0.43-0.58 of the original's) of the ramp.
    slopes = (out[..., 1:] - out[..., :-1]).mean(dim=(1, 2, 3)) / (1 / 31)
    assert torch.all(slopes > 0.42) and torch.all(slopes < 0.59) and slopes.std() > 0.005


def test_auto_takes_the_sources_default_and_refuses_inputs_that_are_not_images():
    photos = resolve("auto", data_source("imagefolder").augment, augmentable=True)
    assert photos.flip and photos.crop_scale == (0.35, 1.0)
    assert resolve("auto", data_source("digits").augment, augmentable=True) is None  # a mirrored 2 is no 2
    assert resolve("auto", data_source("imagefolder").augment, augmentable=False) is None
    assert resolve("none", data_source("imagefolder").augment, augmentable=True) is None
    with pytest.raises(ValueError, match="image classification only"):
        resolve(Augment(shift=2), None, augmentable=get_task("classification", text=True).augmentable)


def test_distillation_runs_the_teacher_on_the_augmented_batch(tmp_path):
    splits = make_splits(16)
    spec = ModelSpec(arch="resnet", options={"width": 8, "blocks": [1, 1]})
    teacher = build_model(spec, tmp_path, 1, 10, 16).eval()
    student = build_model(spec, tmp_path, 1, 10, 16).eval()
    ctx = stage_ctx(tmp_path, splits, "ft")
    ctx.refs = {"train": artifact(tmp_path, teacher, "teacher")}
    idx = np.arange(4)
    seen = (augment(torch.from_numpy(splits.x_train[idx]), Augment(shift=3, flip=True), np.random.default_rng(0)),)
    labels = torch.from_numpy(splits.y_train[idx])
    with distillation(Distill(teacher="train", alpha=1.0), TrainingOptions(), student, ctx) as (loss_fn, _):
        out = student(*seen)
        got = loss_fn(out, idx, labels, seen)
        plain = loss_fn(out, idx, labels, None)  # the cached logits of the unaugmented rows
        with torch.no_grad():
            expected = ctx.task.distill_loss(out, teacher(*seen), 4.0)
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(plain, expected)
