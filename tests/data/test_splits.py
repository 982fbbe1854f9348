"""Split generators on the real Indian Pines ground truth: counts, disjointness, leakage."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from geolesf.config import DataConfig
from geolesf.data.splits import (
    DASE_INDIAN_PINES_REMAP,
    SPECTRALFORMER_INDIAN_PINES_REMAP,
    Split,
    count_split,
    dase_split,
    disjoint_split,
    fixed_split,
    leakage_report,
    make_split,
    random_split,
)
from geolesf.errors import DataError
from geolesf.io.hsi import read_labels


@pytest.fixture(scope="module")
def gt(shared_data):
    return read_labels(shared_data / "indian_pines" / "Indian_pines_gt.mat").data


@pytest.fixture(scope="module")
def dase_mask(shared_data):
    return read_labels(shared_data / "indian_pines" / "indianpines_ts.tif").data


def _check_partition(split: Split, labels: np.ndarray) -> None:
    assert not (split.train & split.test).any()
    lab = split.label_map(labels) > 0
    assert not (split.test & ~lab).any()


def test_random_split_stratified(gt):
    s = random_split(gt, fraction=0.1, seed=0)
    _check_partition(s, gt)
    counts = s.counts(gt)
    for c in range(1, 17):
        n = int((gt == c).sum())
        assert counts["train"][c] == max(1, round(0.1 * n))
        assert counts["train"][c] + counts["test"][c] == n
    assert np.array_equal(s.train, random_split(gt, 0.1, seed=0).train)
    assert not np.array_equal(s.train, random_split(gt, 0.1, seed=1).train)


def test_count_split_caps_small_classes(gt):
    s = count_split(gt, per_class=50, seed=0)
    counts = s.counts(gt)["train"]
    assert counts[9] == 10  # Oats: 20 px, capped at 50 %
    assert counts[7] == 14  # Grass-pasture-mowed: 28 px
    assert counts[2] == 50


def test_too_few_pixels_raise(gt):
    with pytest.raises(DataError, match=r"class 9 has 20 pixels"):
        random_split(gt, fraction=0.1, min_per_class=20)
    tiny = gt.copy()
    tiny[tiny == 9] = 0
    tiny[0, 0] = 9
    with pytest.raises(DataError, match=r"count split: class 9 has 1 pixels") as err:
        count_split(tiny, per_class=5)
    assert "\n" not in str(err.value)


def test_leakage_random_vs_disjoint(gt):
    """The point of disjoint splits: 7×7 patches of random-split test pixels see training pixels."""
    rnd = leakage_report(random_split(gt, 0.1, seed=0), patch_size=7)
    assert rnd["test_patches_with_train_pixels"] > 0 and rnd["fraction"] > 0.9
    assert rnd["test_pixels_in_train"] == 0
    dis_split = disjoint_split(gt, block_size=10, train_fraction=0.1, buffer=3, seed=0)
    _check_partition(dis_split, gt)
    dis = leakage_report(dis_split, patch_size=7)
    assert dis["test_patches_with_train_pixels"] == 0 and dis["fraction"] == 0.0
    assert dis["test_pixels"] > 5000
    counts = dis_split.counts(gt)
    assert set(counts["train"]) == set(range(1, 17))  # every class gets training pixels
    assert len(counts["test"]) >= 15
    # Whole blocks: a block is either all-train or has no training pixel.
    rows, cols = np.indices(gt.shape)
    block = (rows // 10) * 15 + cols // 10
    lab = gt > 0
    for b in np.unique(block[dis_split.train]):
        assert dis_split.train[(block == b) & lab].all()


def test_disjoint_buffer_zero_leaks(gt):
    s = disjoint_split(gt, block_size=10, train_fraction=0.1, buffer=0, seed=0)
    assert leakage_report(s, 7)["test_patches_with_train_pixels"] > 0


def test_dase_split_counts(gt, dase_mask):
    s = dase_split(gt, dase_mask)
    _check_partition(s, gt)
    assert s.params["mask_pixels"] == 5689
    assert s.params["dropped_on_background"] == 151
    assert s.params["class_disagreements_fixed_from_ground_truth"] == 10
    assert int(s.train.sum()) == 5689 - 151
    assert int(s.test.sum()) == 10249 - int(s.train.sum())
    counts = s.counts(gt)
    assert sum(counts["train"].values()) == 5538
    assert set(counts["train"]) == set(range(1, 17))
    # DASE class 1 is standard class 2 (Corn-notill): mask pixels of class 1 mostly on class 2.
    on1 = (dase_mask == 1) & (gt > 0)
    assert np.mean(gt[on1] == DASE_INDIAN_PINES_REMAP[1]) > 0.99


@pytest.mark.shared_data("indian_pines_fixed_split")
def test_fixed_spectralformer_split(shared_data, gt):
    folder = shared_data / "indian_pines_fixed_split"
    tr = read_labels(folder / "IndianTR123_temp123.tif").data
    te = read_labels(folder / "IndianTE123_temp123.tif").data
    s = fixed_split(gt, tr, te, SPECTRALFORMER_INDIAN_PINES_REMAP)
    counts = s.counts(gt)
    assert sum(counts["train"].values()) == 695 and sum(counts["test"].values()) == 9671
    assert counts["train"][1] == 15 and counts["train"][2] == 50
    assert s.params["pixels_on_unlabelled_ground_truth"] == 256
    assert s.params["pixels_disagreeing_with_ground_truth"] == 0
    no_test = fixed_split(gt, tr, None, SPECTRALFORMER_INDIAN_PINES_REMAP)
    assert int(no_test.test.sum()) == int(((gt > 0) & (tr == 0)).sum())


def test_remap_unknown_id(gt, dase_mask):
    with pytest.raises(DataError, match="not in the remap table"):
        dase_split(gt, dase_mask, remap={1: 2})


def test_make_split_dispatch(gt, dase_mask, tmp_path):
    cfg = DataConfig(split="dase")
    assert int(make_split(cfg, gt).train.sum()) == 5538  # embedded DASE mask
    cfg = DataConfig(split="disjoint", block_size=10, patch_size=9)
    s = make_split(cfg, gt, seed=0)
    assert s.params["buffer"] == 4 and leakage_report(s, 9)["fraction"] == 0.0
    assert make_split(DataConfig(split="count", per_class=5), gt).name == "count"
    with pytest.raises(DataError, match="unknown split 'blocks'"):
        make_split(SimpleNamespace(split="blocks"), gt)
    with pytest.raises(DataError, match="set data.per_class"):
        make_split(DataConfig(split="count"), gt)


@pytest.mark.shared_data("indian_pines_fixed_split")
def test_make_split_fixed_mat_with_tr_te(shared_data, gt, tmp_path):
    import scipy.io

    folder = shared_data / "indian_pines_fixed_split"
    tr = read_labels(folder / "IndianTR123_temp123.tif").data
    te = read_labels(folder / "IndianTE123_temp123.tif").data
    scipy.io.savemat(tmp_path / "split.mat", {"TR": tr.astype(np.uint8), "TE": te.astype(np.uint8)})
    cfg = DataConfig(split="fixed", train_map=str(tmp_path / "split.mat"),
                     remap=SPECTRALFORMER_INDIAN_PINES_REMAP)
    s = make_split(cfg, gt)
    assert int(s.train.sum()) == 695 and int(s.test.sum()) == 9671
    cfg = DataConfig(split="fixed", train_map=str(folder / "IndianTR123_temp123.tif"),
                     test_map=str(folder / "IndianTE123_temp123.tif"), remap=SPECTRALFORMER_INDIAN_PINES_REMAP)
    assert int(make_split(cfg, gt).test.sum()) == 9671
