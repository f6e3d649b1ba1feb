"""Data sources: deterministic splits, shapes from the spec, and the folder and array loaders."""

from __future__ import annotations

import numpy as np
import pytest

from compress.data import load_data
from compress.errors import StageError
from compress.recipe import DataSpec


def test_digits_split_is_deterministic_and_disjoint(tmp_path):
    spec = DataSpec(image_size=16)
    a, b = load_data(spec, tmp_path, seed=3), load_data(spec, tmp_path, seed=3)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert a.input_shape == (1, 16, 16) and a.num_classes == 10
    assert len(a.x_train) + len(a.x_val) + len(a.x_test) == 1797
    assert not np.array_equal(load_data(spec, tmp_path, seed=4).y_test, a.y_test)
    assert a.calibration(100, seed=0).shape == (100, 1, 16, 16)


def test_digits_three_channels(tmp_path):
    splits = load_data(DataSpec(image_size=8, channels=3), tmp_path, seed=0)
    assert splits.input_shape == (3, 8, 8)


def test_npz_with_x_and_y(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 255, (100, 12, 12), dtype=np.uint8), y=np.arange(100) % 4)
    splits = load_data(DataSpec(source="npz", path="d.npz", image_size=8), tmp_path, seed=0)
    assert splits.input_shape == (1, 8, 8) and splits.num_classes == 4
    assert splits.x_train.min() >= -1.0 and splits.x_train.max() <= 1.0


def test_npz_with_wrong_keys_says_what_it_needs(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((4, 8, 8)))
    with pytest.raises(StageError) as info:
        load_data(DataSpec(source="npz", path="d.npz", image_size=8), tmp_path, seed=0)
    assert "expected 'x' and 'y'" in info.value.message


def test_imagefolder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(20):
            Image.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)).save(
                tmp_path / "imgs" / cls / f"{i}.png"
            )
    splits = load_data(DataSpec(source="imagefolder", path="imgs", image_size=8, channels=3), tmp_path, seed=0)
    assert splits.class_names == ["cat", "dog"] and splits.input_shape == (3, 8, 8)
    assert len(splits.x_train) + len(splits.x_val) + len(splits.x_test) == 40
