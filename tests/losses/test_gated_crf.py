"""Gated CRF loss (Obukhov et al. 2019): values worked out by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from geolesf.errors import ConfigError
from geolesf.losses.gated_crf import gated_crf_loss


def _probs(*pixels):
    """(1, K, 1, W) probabilities from per-pixel lists."""
    return torch.tensor(pixels, dtype=torch.float32).T.reshape(1, len(pixels[0]), 1, len(pixels))


def test_two_pixels_one_pair():
    # 1×2 grid, radius 1.5: the only pair is (0, 1) at distance 1 (the dy = 1 offsets leave the grid).
    # K = exp(-1 / (2·1²)) = exp(-0.5) = 0.606531; y0 = (1, 0), y1 = (0.5, 0.5): 1 - y0·y1 = 0.5.
    # Ordered sum = 2 · 0.606531 · 0.5; divided by the 2 source pixels → 0.303265.
    p = _probs([1.0, 0.0], [0.5, 0.5])
    img = torch.zeros(1, 1, 1, 2)
    got = gated_crf_loss(p, img, radius=1.5, sigma_xy=1.0, sigma_img=1.0)
    assert got.item() == pytest.approx(math.exp(-0.5) * 0.5, abs=1e-6)


def test_image_kernel_lowers_the_cost_across_an_edge():
    # Image values 0 and 1, σ_img = 1: K = exp(-0.5 - 1/2) = e^-1 = 0.367879 → loss = e^-1 · 0.5 = 0.183940.
    p = _probs([1.0, 0.0], [0.5, 0.5])
    img = torch.tensor([[[[0.0, 1.0]]]])
    got = gated_crf_loss(p, img, radius=1.5, sigma_xy=1.0, sigma_img=1.0)
    assert got.item() == pytest.approx(math.exp(-1) * 0.5, abs=1e-6)


def test_two_by_two_split_in_columns():
    # 2×2, left column class 0, right column class 1 (one-hot), constant image, σ_xy = 1, radius 1.5.
    # Pairs: horizontal (0,1), (2,3): disagree 1, K = e^-0.5; vertical (0,2), (1,3): agree, 0;
    # diagonals (0,3), (1,2): disagree 1, K = e^-1. Sum = 2e^-0.5 + 2e^-1 = 1.948825;
    # ordered (×2) over 4 source pixels → 0.974412.
    p = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]]])
    got = gated_crf_loss(p, torch.zeros(1, 3, 2, 2), radius=1.5, sigma_xy=1.0, sigma_img=1.0)
    assert got.item() == pytest.approx(2 * (2 * math.exp(-0.5) + 2 * math.exp(-1)) / 4, abs=1e-6)


def test_agreeing_one_hot_maps_cost_nothing_and_the_gate_removes_pairs():
    one = torch.zeros(2, 3, 5, 5)
    one[:, 1] = 1.0
    assert gated_crf_loss(one, torch.randn(2, 2, 5, 5)).item() == pytest.approx(0.0, abs=1e-7)
    p = _probs([1.0, 0.0], [0.5, 0.5])
    gate = torch.tensor([[[True, False]]])
    assert gated_crf_loss(p, torch.zeros(1, 1, 1, 2), gate, radius=1.5).item() == 0.0


def test_gradient_pulls_the_uncertain_pixel_towards_its_similar_neighbour():
    logits = torch.tensor([[[[4.0, 0.0]], [[-4.0, 0.0]]]], requires_grad=True)
    gated_crf_loss(logits.softmax(1), torch.zeros(1, 1, 1, 2), radius=1.5).backward()
    # Lowering the loss means raising class 0 at pixel 1: its gradient is negative there.
    assert logits.grad[0, 0, 0, 1] < 0 < logits.grad[0, 1, 0, 1]


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="differ"):
        gated_crf_loss(torch.zeros(1, 2, 3, 3), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ConfigError, match="positive"):
        gated_crf_loss(torch.zeros(1, 2, 3, 3), torch.zeros(1, 1, 3, 3), sigma_img=0)
