"""Each rank's share of a data-parallel training: the rows of every batch, and their augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compress.stages.augment import Augment, augment
from compress.stages.parallel import rank_shares, share
from compress.stages.training import batches


@pytest.mark.parametrize("size", [1, 2, 3, 6])
@pytest.mark.parametrize("lengths", [None, np.arange(203) % 17], ids=["images", "text"])
def test_ranks_split_every_batch_into_disjoint_covering_shares_with_equal_step_counts(size, lengths):
    drawn = batches(lengths, 203, 16, np.random.default_rng(0))  # the last batch holds 11 rows
    shares = [rank_shares(drawn, rank, size) for rank in range(size)]
    assert len({len(s) for s in shares}) == 1, "every rank takes the same number of steps"
    trained = [idx for idx in drawn if len(idx) >= 2 * size]
    for step, batch in enumerate(trained):
        parts = [idx[rows] for s in shares for idx, rows in [s[step]]]
        assert all(len(p) >= 2 for p in parts), "BatchNorm needs two examples per rank"
        assert sorted(np.concatenate(parts).tolist()) == sorted(batch.tolist()), "disjoint and covering"
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    # 203 rows make 12 batches of 16 and one of 11, too few for 6 ranks of two: only that one is skipped
    assert len(trained) == len(drawn) - (size == 6)


def test_shares_are_contiguous_and_differ_by_at_most_one_row():
    assert [share(10, r, 4) for r in range(4)] == [slice(0, 3), slice(3, 6), slice(6, 8), slice(8, 10)]
    assert share(7, 0, 1) == slice(0, 7)


def test_a_ranks_rows_are_augmented_as_in_one_process():
    """The draws are made for the whole batch, so the generators stay in step across ranks."""
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((10, 1, 12, 12)).astype(np.float32))
    cfg = Augment(shift=2, crop_scale=(0.5, 1.0), flip=True)
    whole_rng, rank_rng = np.random.default_rng(0), np.random.default_rng(0)
    whole = augment(x, cfg, whole_rng)
    rows = share(10, 1, 2)
    part = augment(x[rows], cfg, rank_rng, rows, batch=10)
    assert torch.allclose(part, whole[rows], atol=1e-6)
    assert rank_rng.bit_generator.state == whole_rng.bit_generator.state
