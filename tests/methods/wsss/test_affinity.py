"""Affinity: neighbour pairs, attention/embedding affinity, adaptive affinity loss, random walk."""

from __future__ import annotations

import math

import pytest
import torch

from geolesf.errors import ConfigError
from geolesf.methods.wsss.affinity import (
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
    smooth = random_walk(maps, aff, iters=4)
    assert smooth.std() < maps.std()
