"""BoxInst projection and pairwise losses (geolesf.losses.box), computed by hand on tiny tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geolesf.losses.box import (
    box_outside_target,
    boxes_in_window,
    colour_similarity,
    dice_loss,
    pairwise_loss,
    pixel_ranges,
    pool_for_projection,
    projection_loss,
    smooth_max,
)


def test_dice_loss_by_hand():
    # a = (0.5, 1), t = (1, 1): 1 − 2·1.5 / (0.25 + 1 + 2) = 1 − 3/3.25
    assert dice_loss(torch.tensor([0.5, 1.0]), torch.ones(2)).item() == pytest.approx(1 - 3 / 3.25, abs=1e-5)
    assert dice_loss(torch.ones(3), torch.ones(3)).item() == pytest.approx(0.0, abs=1e-5)


def test_projection_loss_by_hand():
    """One box on channel 1 covering columns 1..3, rows 0..1 of a 3×5 map.

    Window (rows 0..1, cols 1..3) of p₁ = [[0.2, 0.9, 0.1], [0.4, 0.3, 0.6]].
    x-projection (max over rows, per column) = (0.4, 0.9, 0.6): Σa = 1.9, Σa² = 0.16 + 0.81 + 0.36 = 1.33,
    Σt² = 3 → L_x = 1 − 3.8 / 4.33.  y-projection (max over columns, per row) = (0.9, 0.6): Σa = 1.5,
    Σa² = 1.17, Σt² = 2 → L_y = 1 − 3.0 / 3.17.  L = L_x + L_y = 0.122402 + 0.053628 = 0.176030.
    Pixels outside the window (set to 0.99 here) do not enter.
    """
    probs = torch.full((2, 3, 5), 0.99)
    probs[1, 0:2, 1:4] = torch.tensor([[0.2, 0.9, 0.1], [0.4, 0.3, 0.6]])
    probs.requires_grad_(True)
    lx, ly = 1 - 3.8 / 4.33, 1 - 3.0 / 3.17
    both = torch.tensor([[1, 1, 0, 3, 1, 1, 1]])
    loss = projection_loss(probs, both)
    assert loss.item() == pytest.approx(lx + ly, abs=1e-4)
    loss.backward()
    grad = probs.grad[1]
    # only the maxima of each row / column receive a gradient: (1,1) (0,2) (1,3) — and (0,2) for row 0
    assert set(map(tuple, torch.nonzero(grad).tolist())) == {(1, 1), (0, 2), (1, 3)}
    assert probs.grad[0].abs().sum() == 0
    only_x = torch.tensor([[1, 1, 0, 3, 1, 1, 0]])
    assert projection_loss(probs, only_x).item() == pytest.approx(lx, abs=1e-4)
    # two boxes: the mean over boxes; a box with neither projection does not count
    two = torch.tensor([[1, 1, 0, 3, 1, 0, 1], [1, 1, 0, 3, 1, 1, 0], [0, 0, 0, 1, 1, 0, 0]])
    assert projection_loss(probs, two).item() == pytest.approx((lx + ly) / 2, abs=1e-4)
    assert projection_loss(probs, torch.zeros(0, 7, dtype=torch.long)).item() == 0.0
    per_box = projection_loss(probs, two, reduction="none")  # per-box terms, to average over a whole batch
    assert per_box.tolist() == pytest.approx([ly, lx], abs=1e-4)
    assert projection_loss(probs, torch.zeros(0, 7, dtype=torch.long), reduction="none").shape == (0,)


def test_pairwise_loss_by_hand():
    """A 1×2 image, dilation 1: the only edges are 0→1 and 1→0 (both horizontal).

    p₀ = (0.8, 0.2), p₁ = (0.6, 0.4): P(same) = 0.8·0.6 + 0.2·0.4 = 0.56, −log 0.56 = 0.579818.
    Colours 0 and 0.1, θ = 0.1: S = exp(−1) = 0.3679 ≥ τ = 0.3 → both edges count → L = 0.579818.
    Colours 0 and 0.5: S = exp(−5) < τ → no edge → L = 0.
    """
    probs = torch.tensor([[0.8, 0.6], [0.2, 0.4]]).reshape(1, 2, 1, 2)
    log_p = probs.log().requires_grad_(True)
    image = torch.tensor([0.0, 0.1]).reshape(1, 1, 1, 2)
    sim = colour_similarity(image, dilation=1, theta=0.1)
    assert sim.shape == (1, 8, 1, 2)
    assert sorted(sim.flatten().tolist())[-2:] == pytest.approx([math.exp(-1)] * 2, abs=1e-6)
    assert (sim > 0).sum() == 2  # every other neighbour is off the image
    in_box = torch.ones(1, 1, 2, dtype=torch.bool)
    loss = pairwise_loss(log_p, sim, in_box, dilation=1, tau=0.3)
    assert loss.item() == pytest.approx(-math.log(0.56), abs=1e-6)
    loss.backward()
    assert log_p.grad.abs().sum() > 0
    far = colour_similarity(torch.tensor([0.0, 0.5]).reshape(1, 1, 1, 2), dilation=1, theta=0.1)
    assert pairwise_loss(log_p, far, in_box, dilation=1, tau=0.3).item() == 0.0
    # only the edge whose centre pixel is in a box counts (here pixel 1's edge 1→0: same P(same))
    half = torch.tensor([[[False, True]]])
    assert pairwise_loss(log_p, sim, half, dilation=1).item() == pytest.approx(-math.log(0.56), abs=1e-6)


def test_pairwise_dilation_two_reaches_two_pixels_away():
    """Dilation 2 on a 1×3 image: pixel 0 and 2 are neighbours, pixel 1 has none."""
    image = torch.zeros(1, 1, 1, 3)
    sim = colour_similarity(image, dilation=2)
    assert sim[0, :, 0].sum(0).tolist() == [1.0, 0.0, 1.0]
    log_p = torch.log(torch.tensor([[1.0, 0.5, 0.5], [0.0, 0.5, 0.5]]).clamp_min(1e-12)).reshape(1, 2, 1, 3)
    # edge 0↔2: P(same) = 1·0.5 + 0·0.5 = 0.5 → L = log 2
    loss = pairwise_loss(log_p, sim, torch.ones(1, 1, 3, dtype=torch.bool), dilation=2)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)


def test_pixel_ranges_and_window_cuts():
    # edges 1.0..4.0 cover pixel centres 1.5, 2.5, 3.5 → columns 1..3; a sub-pixel box keeps its centre pixel
    r = pixel_ranges(np.array([[1.0, 0.0, 4.0, 2.0], [2.2, 2.2, 2.4, 2.4]]))
    assert r.tolist() == [[1, 0, 3, 1], [2, 2, 2, 2]]
    rows = boxes_in_window(np.array([[1, 0, 3, 1], [6, 6, 9, 7], [20, 20, 22, 22]]), np.array([1, 0, 1]),
                           row=0, col=2, size_y=8, size_x=6)
    # rows [channel, c0, r0, c1, r1, use_x, use_y]. Box 0 (columns 1..3 → −1..1) is cut on the left: cut in x
    # → no y-projection. Box 1 (columns 6..9 → 4..7, crop width 6) is cut on the right: also x-projection only.
    # Box 2 lies outside the crop and is dropped.
    assert rows.tolist() == [[1, 0, 0, 1, 1, 1, 0], [0, 4, 6, 5, 7, 1, 0]]
    cut_y = boxes_in_window(np.array([[0, 2, 1, 5]]), np.array([1]), row=3, col=0, size_y=4, size_x=4)
    assert cut_y.tolist() == [[1, 0, 0, 1, 2, 0, 1]]  # rows 2..5 → −1..2: cut in y → y-projection only


def test_box_outside_target():
    t = box_outside_target(np.array([[1, 0, 2, 1]]), (2, 4), background=0)
    assert t.tolist() == [[0, -100, -100, 0], [0, -100, -100, 0]]


def test_smooth_max_by_hand():
    """α-softmax of (0, 1) with α = ln 3: weights softmax(0, ln 3) = (¼, ¾) → 0·¼ + 1·¾ = 0.75.
    α = 0 is the hard max; a large α approaches it."""
    x = torch.tensor([[0.0, 1.0]])
    assert smooth_max(x, 1, math.log(3)).item() == pytest.approx(0.75, abs=1e-6)
    assert smooth_max(x, 1, 0.0).item() == 1.0
    assert smooth_max(x, 1, 50.0).item() == pytest.approx(1.0, abs=1e-6)
    # in the projection loss: window [[0, 1]] on channel 0 (1×2), y-projection only → dice(0.75, 1)
    probs = torch.tensor([[[0.0, 1.0]]])
    loss = projection_loss(probs, torch.tensor([[0, 0, 0, 1, 0, 0, 1]]), alpha=math.log(3))
    assert loss.item() == pytest.approx(1 - 2 * 0.75 / (0.75 ** 2 + 1), abs=1e-4)


def test_pooled_projection_by_hand_and_the_outline_it_no_longer_rewards():
    """BoxInst's stride: the max-projection of 2×2-cell means, so a one-pixel outline no longer satisfies it.

    A 4×4 box (rows/cols 0..3) on channel 1 whose probability map is its one-pixel outline (1 on the border,
    0 inside): at stride 1 every row and every column holds a 1, so the loss is 0. Pooled over 2×2 cells each
    cell holds 3 border pixels of 4 → every cell is 0.75; the box covers cells 0..1 in x and y; both
    projections are (0.75, 0.75): L_axis = 1 − 2·1.5 / (2·0.5625 + 2) = 1 − 3 / 3.125 = 0.04, L = 0.08.
    A 5-wide box at stride 2 (cols 0..4) covers cells 0..2 (the edge cell averages the pixels it holds).
    """
    outline = torch.ones(4, 4)
    outline[1:3, 1:3] = 0.0
    probs = torch.stack([1 - outline, outline])
    rows = torch.tensor([[1, 0, 0, 3, 3, 1, 1]])
    assert projection_loss(probs, rows).item() == pytest.approx(0.0, abs=1e-5)
    pooled, cells = pool_for_projection(probs, rows, 2)
    assert pooled.shape == (2, 2, 2)
    assert torch.allclose(pooled[1], torch.full((2, 2), 0.75))
    assert cells.tolist() == [[1, 0, 0, 1, 1, 1, 1]]
    assert projection_loss(pooled, cells).item() == pytest.approx(2 * (1 - 3 / 3.125), abs=1e-5)
    filled = torch.stack([torch.zeros(4, 4), torch.ones(4, 4)])  # the filled box still scores 0
    assert projection_loss(*pool_for_projection(filled, rows, 2)).item() == pytest.approx(0.0, abs=1e-5)
    wide = pool_for_projection(torch.ones(2, 5, 5), torch.tensor([[1, 0, 0, 4, 4, 1, 1]]), 2)
    assert torch.equal(wide[0], torch.ones(2, 3, 3)) and wide[1].tolist() == [[1, 0, 0, 2, 2, 1, 1]]
    same, same_rows = pool_for_projection(probs, rows, 1)
    assert same is probs and same_rows is rows
