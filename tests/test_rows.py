"""Splits on disk read a batch at a time: RowFile indexing, and the evaluation inputs a target gets."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from compress.agent.job import load_feeds
from compress.data import Splits
from compress.data.rows import RowFile
from compress.measure.jobs import write_eval_inputs
from compress.tasks import get_task


@pytest.fixture
def saved(tmp_path):
    array = np.random.default_rng(0).standard_normal((50, 3, 4, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", array)
    return array, RowFile(tmp_path / "x.npy")


def test_rows_index_like_the_array(saved):
    array, rows = saved
    index = np.array([3, 4, 5, 9, 0, 49, 48])
    for key in [3, -1, slice(None), slice(2, 10), slice(10, 2, -2), index, index.reshape(7, 1),
                array[:, 0, 0, 0] > 0.5, (slice(None), 0), (index, 1, 2), (5, 1), slice(60, 70)]:  # fmt: skip
        got = rows[key]
        assert type(got) is np.ndarray and np.array_equal(got, array[key]), key
    assert np.array_equal(np.asarray(rows), array) and len(rows) == 50 and rows.shape == array.shape
    with pytest.raises(IndexError):
        rows[np.array([50])]


def test_rows_stay_readable_after_pickling_and_after_the_name_is_gone(saved, tmp_path):
    array, rows = saved
    copy = pickle.loads(pickle.dumps(rows))  # a worker process opens the file itself
    (tmp_path / "x.npy").unlink()
    assert np.array_equal(rows[[1, 2, 40]], array[[1, 2, 40]]) and np.array_equal(copy[7], array[7])


def test_saved_splits_read_images_by_row_and_labels_whole(tmp_path):
    x = np.zeros((6, 1, 4, 4), np.float32)
    y = np.arange(6, dtype=np.int64)
    Splits(x, y, x, y, x, y, ["a"]).save(tmp_path / "s")
    loaded = Splits.load(tmp_path / "s")
    assert isinstance(loaded.x_train, RowFile) and isinstance(loaded.y_train, np.ndarray)


class WholeReadForbidden(RowFile):
    def __array__(self, dtype=None, copy=None):
        raise AssertionError("the whole split was read into memory")


def test_evaluation_inputs_are_written_and_read_a_chunk_at_a_time(saved, tmp_path):
    array, _ = saved
    examples = WholeReadForbidden(tmp_path / "x.npy")
    write_eval_inputs(tmp_path / "eval", examples, get_task("classification").feeds, rows=8)
    feeds = load_feeds(tmp_path / "eval")
    assert list(feeds) == ["input"] and isinstance(feeds["input"], RowFile)
    assert np.array_equal(feeds["input"][:], array)
