"""Generalized cross-entropy (geolesf.losses.robust) by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from geolesf.losses.robust import generalized_cross_entropy


def test_gce_by_hand():
    """Logits (0, ln 3) → p = (¼, ¾). Target 1, q = 0.5: (1 − 0.75^0.5)/0.5 = 0.267949;
    target 0: (1 − 0.25^0.5)/0.5 = 1.0. Mean of the two = 0.633975; the ignored pixel does not count."""
    logits = torch.tensor([[0.0, math.log(3)], [0.0, math.log(3)], [5.0, 0.0]])
    target = torch.tensor([1, 0, -100])
    loss = generalized_cross_entropy(logits, target, q=0.5)
    assert loss.item() == pytest.approx(((1 - 0.75 ** 0.5) / 0.5 + 1.0) / 2, abs=1e-6)


def test_gce_limits_and_gradient_weighting():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4))
    # q → 0 approaches cross-entropy; q = 1 is 1 − p_y (the MAE of the paper)
    ce = F.cross_entropy(logits, target)
    assert generalized_cross_entropy(logits, target, q=1e-4).item() == pytest.approx(ce.item(), rel=1e-3)
    p_y = F.softmax(logits, 1).gather(1, target[:, None]).squeeze(1)
    assert generalized_cross_entropy(logits, target, q=1.0).item() == pytest.approx((1 - p_y).mean().item(), abs=1e-6)
    # the gradient is CE's gradient times p_y^q: a confidently contradicted pixel pulls less
    z = torch.tensor([[4.0, 0.0]], requires_grad=True)
    generalized_cross_entropy(z, torch.tensor([1]), q=0.7).backward()
    z2 = z.detach().clone().requires_grad_(True)
    F.cross_entropy(z2, torch.tensor([1])).backward()
    p1 = torch.softmax(z.detach(), 1)[0, 1].item()
    assert z.grad[0, 1].item() == pytest.approx(z2.grad[0, 1].item() * p1 ** 0.7, rel=1e-5)
    with pytest.raises(ValueError, match="q must be"):
        generalized_cross_entropy(logits, target, q=0.0)
    assert generalized_cross_entropy(logits, torch.full_like(target, -100)).item() == 0.0


def test_gce_class_weights_by_hand():
    """Same pixels as test_gce_by_hand, weights (3, 1): (3 · 1.0 + 1 · 0.267949) / (3 + 1) — the weighted mean."""
    logits = torch.tensor([[0.0, math.log(3)], [0.0, math.log(3)], [5.0, 0.0]])
    target = torch.tensor([1, 0, -100])
    loss = generalized_cross_entropy(logits, target, q=0.5, weight=torch.tensor([3.0, 1.0]))
    assert loss.item() == pytest.approx((3 * 1.0 + (1 - 0.75 ** 0.5) / 0.5) / 4, abs=1e-6)
