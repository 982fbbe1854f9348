"""Affinity: neighbour pairs, attention/embedding affinity, adaptive affinity loss, random walk."""

from __future__ import annotations

import math

import pytest
import torch

from geolesf.errors import ConfigError
from geolesf.losses.affinity import (
    adaptive_affinity_loss,
    attention_affinity,
    embedding_affinity,
    feature_affinity,
    neighbour_pairs,
    random_walk,
)


def _brute_pairs(h, w, r):
    pts = [(y, x) for y in range(h) for x in range(w)]
    return {(a * w + b, c * w + d) if a * w + b < c * w + d else (c * w + d, a * w + b)
            for i, (a, b) in enumerate(pts) for (c, d) in pts[i + 1:] if (a - c) ** 2 + (b - d) ** 2 < r * r}


@pytest.mark.parametrize("radius", [1.5, 2, 5])
def test_neighbour_pairs_on_a_6x6_map(radius):
    i, j = neighbour_pairs(6, 6, radius)
    got = {(min(a, b), max(a, b)) for a, b in zip(i.tolist(), j.tolist())}
    assert len(got) == len(i)  # no duplicates
    assert got == _brute_pairs(6, 6, radius)


def test_neighbour_pair_count_hand_computed():
    # r = 1.5: horizontal 6·5 + vertical 5·6 + two diagonals 2·5·5 = 110 pairs
    assert len(neighbour_pairs(6, 6, 1.5)[0]) == 110
    assert len(neighbour_pairs(6, 6, 1)[0]) == 0  # dy² + dx² < 1 only for the pixel itself


def test_attention_affinity_symmetric_and_row_normalised():
    torch.manual_seed(0)
    attns = [torch.rand(2, 3, 10, 10).softmax(-1) for _ in range(3)]
    raw = attention_affinity(attns, layers=2, normalise=False)
    assert raw.shape == (2, 9, 9)
    assert torch.allclose(raw, raw.transpose(1, 2))
    expect = torch.stack([a.mean(1) for a in attns[-2:]]).mean(0)[:, 1:, 1:]
    assert torch.allclose(raw, 0.5 * (expect + expect.transpose(1, 2)))
    norm = attention_affinity(attns, layers=2)
    assert torch.allclose(norm.sum(-1), torch.ones(2, 9))
    with pytest.raises(ConfigError):
        attention_affinity([])


def test_embedding_and_feature_affinity():
    torch.manual_seed(1)
    emb = torch.randn(1, 4, 5, 5)
    a = embedding_affinity(emb, radius=2, normalise=False)
    assert torch.allclose(a, a.transpose(1, 2))
    assert a[0, 0, 0] == 1.0
    assert a[0, 0, 2] == 0.0 and a[0, 0, 1] > 0  # (0,0)-(0,2) is at distance 2, not < 2
    d = (emb[0, :, 0, 0] - emb[0, :, 0, 1]).abs().mean()
    assert a[0, 0, 1].item() == pytest.approx(math.exp(-d.item()), rel=1e-6)
    assert torch.allclose(embedding_affinity(emb, radius=2).sum(-1), torch.ones(1, 25))
    f = feature_affinity(emb, radius=3, normalise=False)
    assert torch.allclose(f, f.transpose(1, 2)) and f.min() >= 0
    assert torch.allclose(feature_affinity(emb, radius=3).sum(-1), torch.ones(1, 25))


def test_affinity_loss_hand_computed():
    emb = torch.tensor([[[[0.0, 0.5, 2.0]]]])
    labels = torch.tensor([[[0, 0, 1]]])
    loss = adaptive_affinity_loss(emb, labels, radius=1.5, gamma=2.0, bg_index=0)
    a_pos, a_neg = math.exp(-0.5), math.exp(-1.5)
    expect = (1 - a_pos) ** 2 * 0.5 + 2 * a_neg**2 * -math.log(1 - a_neg)
    assert loss.item() == pytest.approx(expect, rel=1e-6)
    # same pairs, class 1 as the foreground positive pair
    labels = torch.tensor([[[1, 1, 0]]])
    assert adaptive_affinity_loss(emb, labels, radius=1.5, bg_index=0).item() == pytest.approx(expect, rel=1e-6)
    # ignore removes the negative pair
    labels = torch.tensor([[[0, 0, 255]]])
    assert adaptive_affinity_loss(emb, labels, radius=1.5).item() == pytest.approx((1 - a_pos) ** 2 * 0.5, rel=1e-6)


def test_affinity_loss_fg_bg_and_negative_terms_are_separately_averaged():
    emb = torch.tensor([[[[0.0, 1.0, 3.0, 3.5]]]])
    labels = torch.tensor([[[0, 0, 2, 2]]])
    loss = adaptive_affinity_loss(emb, labels, radius=1.5, gamma=0.0)  # γ = 0: plain −log terms
    expect = 1.0 + 0.5 + 2 * -math.log(1 - math.exp(-2.0))
    assert loss.item() == pytest.approx(expect, rel=1e-6)
    no_bg = adaptive_affinity_loss(emb, labels, radius=1.5, gamma=0.0, bg_index=None)
    assert no_bg.item() == pytest.approx(0.75 + 2 * -math.log(1 - math.exp(-2.0)), rel=1e-6)


def test_affinity_loss_has_zero_gradient_when_classes_are_separated():
    emb = torch.zeros(1, 2, 4, 4)
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[..., 2:] = 1
    emb[:, :, :, 2:] = 60.0
    emb.requires_grad_(True)
    loss = adaptive_affinity_loss(emb, labels, radius=2)
    loss.backward()
    assert loss.item() < 1e-12
    assert emb.grad.abs().max().item() < 1e-12
    # a mixed-up embedding gets a gradient
    emb2 = torch.randn(1, 2, 4, 4, requires_grad=True)
    adaptive_affinity_loss(emb2, labels, radius=2).backward()
    assert emb2.grad.abs().max().item() > 1e-4


def test_random_walk_keeps_constants_and_identity():
    maps = torch.rand(1, 3, 4, 4)
    eye = torch.eye(16)[None]
    assert torch.allclose(random_walk(maps, eye, iters=3), maps)
    const = torch.full((1, 2, 4, 4), 0.3)
    aff = embedding_affinity(torch.randn(1, 3, 4, 4), radius=2)
    assert torch.allclose(random_walk(const, aff, beta=2, iters=4), const, atol=1e-6)


def test_random_walk_hand_computed():
    """``M ← M·Tᵀ`` with ``T = rownorm(A^β)``, twice, on a 1×3 map with a hand-written affinity."""
    a = [[1.0, 0.5, 0.0], [0.5, 1.0, 0.25], [0.0, 0.25, 1.0]]
    beta = 2.0
    t = [[v**beta for v in row] for row in a]
    t = [[v / sum(row) for v in row] for row in t]  # rows: [.8 .2 0], [.2/1.0625 1/1.0625 .0625/1.0625], [0 1/17 16/17]
    m = [1.0, 0.0, 2.0]
    for _ in range(2):
        m = [sum(t[i][j] * m[j] for j in range(3)) for i in range(3)]
    got = random_walk(torch.tensor([[[[1.0, 0.0, 2.0]]]]), torch.tensor([a]), beta=beta, iters=2)
    assert got.flatten().tolist() == pytest.approx(m, abs=1e-6)
    # the literal first step for pixel 0: 0.8·1 + 0.2·0 + 0·2
    one = random_walk(torch.tensor([[[[1.0, 0.0, 2.0]]]]), torch.tensor([a]), beta=beta, iters=1)
    assert one[0, 0, 0, 0].item() == pytest.approx(0.8, abs=1e-6)


def test_feature_affinity_hand_computed():
    # 1×3 map, 2 channels: f0 = (1, 0), f1 = (1, 1), f2 = (−1, 0); radius 1.5 → pairs (0,1), (1,2) only
    feats = torch.tensor([[[[1.0, 1.0, -1.0]], [[0.0, 1.0, 0.0]]]])
    raw = feature_affinity(feats, radius=1.5, normalise=False)[0]
    c = 1 / math.sqrt(2)
    expect = [[1.0, c, 0.0], [c, 1.0, 0.0], [0.0, 0.0, 1.0]]  # cos(f1, f2) = −1/√2 is clamped to 0
    assert raw.tolist() == [pytest.approx(r, abs=1e-6) for r in expect]
    norm = feature_affinity(feats, radius=1.5)[0]
    assert norm[0].tolist() == pytest.approx([1 / (1 + c), c / (1 + c), 0.0], abs=1e-6)


# --------------------------------------------------------------------------------------------
# the adaptive affinity loss written out from methods.md §8.2 in plain Python


def _aa_reference(emb, labels, radius, gamma, bg, reduction="mean", ignore=255):
    """``emb[c][y][x]`` floats, ``labels[y][x]`` ints → L_AA (§8.2, focal weights, pairs dy²+dx² < r²)."""
    h, w, n_ch = len(labels), len(labels[0]), len(emb)
    pix = [(y, x) for y in range(h) for x in range(w)]
    pos_fg, pos_bg, neg = [], [], []
    for k, (y1, x1) in enumerate(pix):
        for (y2, x2) in pix[k + 1:]:
            if (y1 - y2) ** 2 + (x1 - x2) ** 2 >= radius**2:
                continue
            l1, l2 = labels[y1][x1], labels[y2][x2]
            if l1 == ignore or l2 == ignore:
                continue
            dist = sum(abs(emb[c][y1][x1] - emb[c][y2][x2]) for c in range(n_ch))
            if reduction == "mean":
                dist /= n_ch
            a = math.exp(-dist)
            if l1 == l2:
                term = (1 - a) ** gamma * -math.log(a)
                (pos_bg if bg is not None and l1 == bg else pos_fg).append(term)
            else:
                neg.append(a**gamma * -math.log(1 - a))
    total = 0.0
    for group in (pos_fg, pos_bg):
        if group:
            total += sum(group) / len(group)
    if neg:
        total += 2 * sum(neg) / len(neg)
    return total


def test_affinity_loss_literal_2x2_case():
    """2×2 map, one channel, r = 1.5 (all 6 pairs are neighbours), labels [[1, 1], [0, 0]], γ = 2."""
    emb = torch.tensor([[[[0.0, 0.5], [1.0, 2.0]]]])
    labels = torch.tensor([[[1, 1], [0, 0]]])

    def pos(d):
        return (1 - math.exp(-d)) ** 2 * d

    def neg(d):
        return math.exp(-d) ** 2 * -math.log(1 - math.exp(-d))

    # fg pair (0,1): d = 0.5; bg pair (2,3): d = 1.0; negatives (0,2) 1.0, (0,3) 2.0, (1,2) 0.5, (1,3) 1.5
    expect = pos(0.5) + pos(1.0) + 2 * (neg(1.0) + neg(2.0) + neg(0.5) + neg(1.5)) / 4
    got = adaptive_affinity_loss(emb, labels, radius=1.5, gamma=2.0, bg_index=0)
    assert got.item() == pytest.approx(expect, abs=1e-6)
    # r = 1.1 drops the two diagonals (0,3) and (1,2)
    expect = pos(0.5) + pos(1.0) + 2 * (neg(1.0) + neg(1.5)) / 2
    assert adaptive_affinity_loss(emb, labels, radius=1.1).item() == pytest.approx(expect, abs=1e-6)


@pytest.mark.parametrize("bg,reduction", [(0, "mean"), (None, "mean"), (0, "sum")])
def test_affinity_loss_matches_the_written_out_formula_on_a_3x3_map(bg, reduction):
    g = torch.Generator().manual_seed(7)
    emb = torch.rand(1, 3, 3, 3, generator=g, dtype=torch.float64)
    labels = torch.tensor([[[0, 0, 1], [0, 255, 1], [2, 2, 1]]])
    got = adaptive_affinity_loss(emb, labels, radius=2.0, gamma=2.0, bg_index=bg, reduction=reduction)
    expect = _aa_reference(emb[0].tolist(), labels[0].tolist(), 2.0, 2.0, bg, reduction)
    assert got.item() == pytest.approx(expect, abs=1e-9)


def test_affinity_loss_gradient_equals_finite_differences_of_the_formula():
    g = torch.Generator().manual_seed(8)
    emb = torch.rand(1, 2, 2, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    labels = torch.tensor([[[0, 0, 1], [2, 1, 1]]])
    adaptive_affinity_loss(emb, labels, radius=1.5, gamma=2.0, bg_index=0).backward()
    base = emb.detach()[0].tolist()
    eps = 1e-6
    for c in range(2):
        for y in range(2):
            for x in range(3):
                up = [[row[:] for row in ch] for ch in base]
                dn = [[row[:] for row in ch] for ch in base]
                up[c][y][x] += eps
                dn[c][y][x] -= eps
                fd = (_aa_reference(up, labels[0].tolist(), 1.5, 2.0, 0)
                      - _aa_reference(dn, labels[0].tolist(), 1.5, 2.0, 0)) / (2 * eps)
                assert emb.grad[0, c, y, x].item() == pytest.approx(fd, abs=1e-6)


def test_affinity_loss_gradient_pulls_positives_together_and_pushes_negatives_apart():
    # 1×2 map, one channel: e = (0, 0.5). Same label → the gradient on e1 is positive (descent moves
    # it towards e0); different labels → negative (descent pushes it away).
    for labels, sign in (([[[1, 1]]]), 1.0), (([[[1, 2]]]), -1.0):
        emb = torch.tensor([[[[0.0, 0.5]]]], requires_grad=True)
        adaptive_affinity_loss(emb, torch.tensor(labels), radius=1.5, gamma=2.0).backward()
        d = 0.5
        a = math.exp(-d)
        if sign > 0:  # d/dd [(1 − e^−d)² d] = 2(1 − e^−d) e^−d d + (1 − e^−d)²
            expect = 2 * (1 - a) * a * d + (1 - a) ** 2
        else:  # d/dd [2 e^−2d (−log(1 − e^−d))] = 2[−2 e^−2d (−log(1 − e^−d)) − e^−2d e^−d / (1 − e^−d)]
            expect = 2 * (-2 * a**2 * -math.log(1 - a) - a**2 * a / (1 - a))
        assert emb.grad[0, 0, 0, 1].item() == pytest.approx(expect, abs=1e-6)
        assert emb.grad[0, 0, 0, 0].item() == pytest.approx(-expect, abs=1e-6)
        assert math.copysign(1.0, expect) == sign
