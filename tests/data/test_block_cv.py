"""Spatial block K-fold cross-validation on the real Indian Pines ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from geolesf.data.block_cv import assign_folds, block_cv_split, block_ids
from geolesf.data.splits import leakage_report
from geolesf.errors import DataError
from tests import scenes


@pytest.fixture(scope="module")
def gt():
    return scenes.ground_truth()


def test_folds_partition_the_labelled_pixels_without_leakage(gt):
    k, patch = 4, 7
    splits = [block_cv_split(gt, k, f, block_size=12, buffer=patch // 2, seed=1) for f in range(k)]
    tested = np.sum([s.test for s in splits], axis=0)
    assert np.array_equal(tested, (gt > 0).astype(int)), "every labelled pixel is tested exactly once"
    for s in splits:
        assert leakage_report(s, patch)["test_patches_with_train_pixels"] == 0
        assert s.train.sum() > 0 and not (s.train & s.test).any()
        assert (gt[s.train] > 0).all()
        assert s.params["train_pixels_dropped_by_buffer"] == int(((gt > 0) & ~s.test & ~s.train).sum()) > 0
    # Without a buffer the same folds leak: the buffer is what removes it.
    leaky = block_cv_split(gt, k, 0, block_size=12, buffer=0, seed=1)
    assert leakage_report(leaky, patch)["fraction"] > 0.05
    loads = [int(s.test.sum()) for s in splits]
    assert max(loads) - min(loads) <= np.bincount(block_ids(gt.shape, 12)[gt > 0]).max()


def test_fold_assignment_is_seeded_whole_blocks(gt):
    a, b, c = (assign_folds(gt, 3, 10, seed=s) for s in (0, 0, 5))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    blocks = block_ids(gt.shape, 10)
    s = block_cv_split(gt, 3, 2, block_size=10, buffer=0, seed=0)
    assert set(np.unique(blocks[s.test])) <= set(np.flatnonzero(a == 2))
    assert set(np.unique(a[np.unique(blocks[gt > 0])])) == {0, 1, 2}


def test_bad_folds_are_clear_errors(gt):
    with pytest.raises(DataError, match="at least 2 folds"):
        block_cv_split(gt, 1, 0)
    with pytest.raises(DataError, match="fold must be within 0..2"):
        block_cv_split(gt, 3, 3)
    with pytest.raises(DataError, match="need at least 40 blocks"):
        block_cv_split(gt, 40, 0, block_size=145)
