"""Supervision objectives: dispatch, options, and each loss on tiny tensors worked out by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from geolesf.errors import ConfigError
from geolesf.methods.unet.objectives import IGNORE, SUPERVISION, MaskObjective, make_objective
from geolesf.methods.unet.sparse import SparseObjective


def _data(supervision, args=None):
    return SimpleNamespace(supervision=supervision, supervision_args=args)


def test_dispatch_table_and_unknown_names():
    assert {"mask", "points", "scribbles"} <= set(SUPERVISION)
    assert isinstance(make_objective(_data("mask")), MaskObjective)
    assert make_objective(_data("points")).name == "points"
    assert make_objective(_data(None)).name == "mask"
    with pytest.raises(ConfigError, match="'dots' is not a supervision type"):
        make_objective(_data("dots"))
    with pytest.raises(ConfigError, match="unknown key.*prior_wieght"):
        make_objective(_data("points", {"prior_wieght": 1}))
    with pytest.raises(ConfigError, match="expected float"):
        make_objective(_data("scribbles", {"prior_weight": "lots"}))
    assert make_objective(_data("points", {"prior_weight": 2})).options["prior_weight"] == 2.0


def test_mask_loss_is_cross_entropy():
    # Equal logits for 2 classes: CE = log 2 at each labelled pixel; the IGNORE pixel does not count.
    logits = torch.zeros(1, 2, 1, 3)
    loss, stats = MaskObjective().loss(logits, None, {"target": torch.tensor([[[0, 1, IGNORE]]])})
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6) and stats["ce"] == pytest.approx(math.log(2), abs=1e-6)


def test_sparse_loss_is_partial_ce_plus_weighted_gated_crf():
    # 1×2 chip, logits 0 → probabilities (0.5, 0.5) everywhere. Pixel 0 labelled class 0: partial CE = log 2
    # = 0.693147 (pixel 1 unlabelled). Prior with radius 1.5, σ_xy = 1, constant image: one pair,
    # K = e^-0.5, 1 - y0·y1 = 0.5 → 2 · e^-0.5 · 0.5 / 2 = 0.303265. prior_weight 2 → 0.693147 + 0.606531.
    obj = SparseObjective("points", prior_weight=2.0, radius=1.5, sigma_xy=1.0, sigma_img=1.0)
    rasters = {"target": torch.tensor([[[0, IGNORE]]]), "valid": torch.ones(1, 1, 2, dtype=torch.bool)}
    loss, stats = obj.loss(torch.zeros(1, 2, 1, 2), torch.zeros(1, 1, 1, 2), rasters)
    assert stats["partial_ce"] == pytest.approx(math.log(2), abs=1e-6)
    assert stats["gated_crf"] == pytest.approx(0.5 * math.exp(-0.5), abs=1e-6)
    assert loss.item() == pytest.approx(math.log(2) + math.exp(-0.5), abs=1e-6)
    # prior_weight 0 is partial CE alone; a chip without labels still has a (prior) loss with the prior on.
    alone = SparseObjective("points", prior_weight=0.0)
    assert alone.loss(torch.zeros(1, 2, 1, 2), torch.zeros(1, 1, 1, 2), rasters)[0].item() == pytest.approx(
        math.log(2), abs=1e-6)
    empty = {"target": torch.full((1, 1, 2), IGNORE), "valid": torch.ones(1, 1, 2, dtype=torch.bool)}
    loss, stats = obj.loss(torch.zeros(1, 2, 1, 2), torch.zeros(1, 1, 1, 2), empty)
    assert stats["partial_ce"] == 0.0 and loss.item() == pytest.approx(math.exp(-0.5), abs=1e-6)
    assert not obj.needs_labels and MaskObjective.needs_labels


def test_sparse_chips_are_placed_around_labelled_pixels():
    import numpy as np

    from geolesf.methods.unet.train import _random_chips

    target = np.full((50, 70), IGNORE, dtype=np.int64)
    target[[0, 49, 20], [0, 69, 33]] = 1  # corners and the middle: the chip must still hold the pixel
    rasters = {"target": target, "valid": np.ones((50, 70), bool)}
    anchors = np.flatnonzero(target != IGNORE)
    _, chips = _random_chips(np.random.default_rng(0), np.zeros((1, 50, 70), np.float32), rasters, 16, 64, "cpu",
                             anchors)
    assert chips["target"].shape == (64, 16, 16)
    assert bool(((chips["target"] != IGNORE).flatten(1).any(1)).all())
    _, uniform = _random_chips(np.random.default_rng(0), np.zeros((1, 50, 70), np.float32), rasters, 16, 64, "cpu")
    assert not bool(((uniform["target"] != IGNORE).flatten(1).any(1)).all())
    assert SparseObjective("points").chips_at_labels and not MaskObjective.chips_at_labels


def test_warmup_switches_the_prior_on_after_the_given_fraction_of_epochs():
    state = SimpleNamespace(epochs=4, rasters={"target": torch.tensor([[0, IGNORE]]).numpy(),
                                               "valid": torch.ones(1, 2, dtype=torch.bool).numpy()})
    obj = SparseObjective("scribbles", prior_weight=0.3, warmup=0.5)
    weights = []
    for epoch in range(4):  # the hook runs with 0 before epoch 1, then after each epoch
        obj.on_epoch_end(epoch, state)
        weights.append(obj.weight)
    assert weights == [0.0, 0.0, 0.3, 0.3] and obj.report()["labelled_share"] == 0.5
    with pytest.raises(ConfigError, match="warmup"):
        make_objective(_data("points", {"warmup": 1.0}))


def test_scale_computes_the_prior_on_pooled_predictions():
    # 2×4 chip, left 2×2 block class 0, right block class 1 (logits ±20: one-hot to 1e-17). scale 2 pools it to
    # 1×2: p0 = (1, 0), p1 = (0, 1); radius 1.5, σ_xy = 1, constant image: one pair, K = e^-0.5, disagreement 1
    # → 2 · e^-0.5 · 1 / 2 source pixels = e^-0.5 = 0.606531 (at full resolution it would be different).
    logits = torch.zeros(1, 2, 2, 4)
    logits[0, 0, :, :2], logits[0, 1, :, 2:] = 20.0, 20.0
    rasters = {"target": torch.full((1, 2, 4), IGNORE), "valid": torch.ones(1, 2, 4, dtype=torch.bool)}
    obj = SparseObjective("points", prior_weight=1.0, radius=1.5, sigma_xy=1.0, sigma_img=1.0, scale=2)
    loss, stats = obj.loss(logits, torch.zeros(1, 1, 2, 4), rasters)
    assert stats["gated_crf"] == pytest.approx(math.exp(-0.5), abs=1e-6) and loss.item() == pytest.approx(
        math.exp(-0.5), abs=1e-6)
    with pytest.raises(ConfigError, match="scale"):
        make_objective(_data("points", {"scale": 0}))
