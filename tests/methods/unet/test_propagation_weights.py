"""Class weights of the segmentation cross-entropy and the random-walk label propagation, by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from geolesf.data.propagation import UNLABELLED, propagate_labels, random_walk_probabilities
from geolesf.errors import ConfigError
from geolesf.methods.unet.objectives import IGNORE, MaskObjective, class_weights, make_objective
from geolesf.methods.unet.sparse import SparseObjective


def test_class_weights_by_hand():
    # 3 pixels of class 0, 1 of class 1, 2 unlabelled, class 2 absent.
    target = np.array([[0, 0, 0, 1, IGNORE, IGNORE]])
    assert class_weights(target, 3, "none") is None
    # balanced: n / (K n_c) with n = 4, K = 2 present classes → 4/6, 4/2; the absent class 1.
    assert class_weights(target, 3, "balanced") == pytest.approx([2 / 3, 2.0, 1.0])
    # sqrt: 1/√n_c = (0.57735, 1) scaled so that 3·w0 + 1·w1 = 4: s = 4 / (3·0.57735 + 1) = 1.464102.
    s = 4 / (3 / math.sqrt(3) + 1)
    assert class_weights(target, 3, "sqrt") == pytest.approx([s / math.sqrt(3), s, 1.0])
    # enet: 1 / ln(1.02 + p_c) with p = (0.75, 0.25) → 1/ln 1.77 = 1.751376, 1/ln 1.27 = 4.183805.
    assert class_weights(target, 3, "enet") == pytest.approx([1.751376, 4.183805, 1.0], abs=1e-6)
    with pytest.raises(ConfigError, match="class_weights must be one of"):
        class_weights(target, 3, "inverse")


def test_weighted_mask_loss_by_hand():
    # Logits 0 → CE = log 2 per pixel, so any weighted mean is log 2; make pixel 1 confidently right instead:
    # logits (0, 2) for class 1 → CE = log(1 + e^-2) = 0.126928. Weights (0.5, 2): (0.5·log 2 + 2·0.126928) / 2.5.
    logits = torch.zeros(1, 2, 1, 3)
    logits[0, 1, 0, 1] = 2.0
    obj = MaskObjective()
    obj.class_weights = torch.tensor([0.5, 2.0])
    loss, _ = obj.loss(logits, None, {"target": torch.tensor([[[0, 1, IGNORE]]])})
    ce1 = math.log(1 + math.exp(-2))
    assert loss.item() == pytest.approx((0.5 * math.log(2) + 2 * ce1) / 2.5, abs=1e-6)
    obj.class_weights = None
    assert obj.loss(logits, None, {"target": torch.tensor([[[0, 1, IGNORE]]])})[0].item() == pytest.approx(
        (math.log(2) + ce1) / 2, abs=1e-6)


def _two_regions():
    # 12×16 image: left half value 0, right half value 10 (one band); one seed per region.
    image = np.zeros((1, 12, 16))
    image[:, :, 8:] = 10.0
    seeds = np.full((12, 16), UNLABELLED)
    seeds[2, 3], seeds[9, 12] = 1, 0
    return image, seeds


def test_random_walk_gives_each_flat_region_its_seed_class():
    image, seeds = _two_regions()
    prob = random_walk_probabilities(image, seeds, 2, beta=10.0)
    assert prob.shape == (2, 12, 16) and np.allclose(prob.sum(0), 1.0, atol=1e-4)
    labels = propagate_labels(image, seeds, 2, beta=10.0, threshold=0.9)
    assert (labels[:, :8] == 1).all() and (labels[:, 8:] == 0).all()
    # Without the edge (one flat image) the walk reaches both seeds: pixels midway are not confident.
    flat = propagate_labels(np.zeros_like(image), seeds, 2, beta=10.0, threshold=0.9)
    assert (flat == UNLABELLED).any() and flat[2, 3] == 1 and flat[9, 12] == 0
    # A region cut off by missing data and holding no seed stays unlabelled; so do the nodata pixels.
    valid = np.ones((12, 16), bool)
    valid[:, 5] = False
    cut = propagate_labels(image, seeds, 2, beta=10.0, threshold=0.5, valid=valid)
    assert (cut[:, :5] == 1).all() and (cut[:, 5] == UNLABELLED).all() and (cut[:, 6:8] == UNLABELLED).all()
    with pytest.raises(ConfigError, match="threshold"):
        propagate_labels(image, seeds, 2, threshold=0)
    with pytest.raises(ConfigError, match="seed classes"):
        propagate_labels(image, seeds, 1)


def test_sparse_objective_adds_the_propagated_labels_as_a_weighted_term():
    image, seeds = _two_regions()
    state = SimpleNamespace(epochs=2, image=image.astype(np.float32), class_ids=[0, 1],
                            rasters={"target": seeds.astype(np.int64), "valid": np.ones((12, 16), bool)})
    obj = make_objective(SimpleNamespace(supervision="points", supervision_args={"propagate": 0.5,
                                                                                "prior_weight": 0}))
    obj.on_epoch_end(0, state)
    spread = state.rasters["propagated"]
    assert spread[2, 3] == IGNORE and spread[9, 12] == IGNORE  # the seeds count in the partial CE only
    assert (spread[:, :8][seeds[:, :8] == UNLABELLED] == 1).all() and obj.report()["propagated_share"] > 0.9
    # Chip = row 0 (cols 0..15): no seed; 16 propagated pixels. Logits 0 → CE log 2 each: 0.5 · log 2.
    chips = {k: torch.from_numpy(v[None, :1]) for k, v in state.rasters.items()}
    loss, stats = obj.loss(torch.zeros(1, 2, 1, 16), torch.zeros(1, 1, 1, 16), chips)
    assert stats["partial_ce"] == 0.0 and stats["propagated_ce"] == pytest.approx(math.log(2), abs=1e-6)
    assert loss.item() == pytest.approx(0.5 * math.log(2), abs=1e-6)
    # propagate 0 (the default) adds no raster: partial CE alone.
    alone = SparseObjective("points", prior_weight=0.0)
    fresh = {"target": seeds.astype(np.int64), "valid": np.ones((12, 16), bool)}
    alone.on_epoch_end(0, SimpleNamespace(epochs=2, image=state.image, class_ids=[0, 1], rasters=fresh))
    assert "propagated" not in fresh
    with pytest.raises(ConfigError, match="propagate_threshold"):
        make_objective(SimpleNamespace(supervision="points", supervision_args={"propagate_threshold": 1.5}))


def test_balanced_chip_sampling_puts_a_rare_class_in_about_half_the_chips():
    from geolesf.methods.unet.train import _anchors, _random_chips

    target = np.zeros((60, 60), dtype=np.int64)
    target[5, 50] = 1  # one pixel of class 1 among 3,539 of class 0 (row 0 unlabelled)
    target[0, :] = IGNORE
    rasters = {"target": target, "valid": np.ones((60, 60), bool)}
    anchors = _anchors(target, False, "balanced")
    assert [a.tolist() for a in anchors][1] == [5 * 60 + 50] and len(anchors) == 2
    _, chips = _random_chips(np.random.default_rng(0), np.zeros((1, 60, 60), np.float32), rasters, 8, 400, "cpu",
                             anchors)
    share = float((chips["target"] == 1).flatten(1).any(1).float().mean())
    assert 0.4 < share < 0.6  # a uniform chip holds the pixel with probability 64 / 53² = 2.3 %
    assert _anchors(target, False, "uniform") is None and _anchors(target, True, "uniform").size == 60 * 59
