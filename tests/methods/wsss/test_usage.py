"""USAGE: temperature pooling, generation and regularisation losses (methods.md §5.4 checks)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from geolesf.errors import ConfigError
from geolesf.methods.wsss.cam import CAMNet
from geolesf.methods.wsss.usage import (
    default_bg_threshold,
    default_tau,
    generation_loss,
    make_view,
    regularisation_loss,
    temperature_pool,
    usage_loss,
)
from geolesf.registry import create_model


def test_pool_is_gap_at_large_tau_and_gmp_at_small_tau():
    torch.manual_seed(0)
    maps = torch.randn(3, 4, 5, 6)
    assert torch.allclose(temperature_pool(maps, 1e6), maps.mean((-2, -1)), atol=1e-4)
    assert torch.allclose(temperature_pool(maps, 1e-6), maps.amax((-2, -1)), atol=1e-4)


def test_pool_hand_computed():
    maps = torch.tensor([[[[0.0, 1.0]]]])
    e = math.e
    assert temperature_pool(maps, 1.0).item() == pytest.approx(e / (1 + e), abs=1e-7)
    # τ = 0.5: weights softmax([0, 2])
    assert temperature_pool(maps, 0.5).item() == pytest.approx(e**2 / (1 + e**2), abs=1e-7)
    with pytest.raises(ConfigError):
        temperature_pool(maps, 0.0)


def test_area_receiving_gradient_shrinks_with_tau():
    """τ → large spreads the pooling gradient over the map (larger seed areas), τ → small concentrates it."""
    torch.manual_seed(1)
    base = torch.rand(1, 1, 8, 8)
    areas = []
    for tau in (100.0, 1.0, 0.1, 0.01):
        maps = base.clone().requires_grad_(True)
        temperature_pool(maps, tau).sum().backward()
        g = maps.grad.abs()
        areas.append(int((g > 1e-3 * g.max()).sum()))
    assert areas == sorted(areas, reverse=True)
    assert areas[0] == 64 and areas[-1] < 10


def test_generation_loss_hand_computed():
    maps = torch.tensor([[[[0.0, 2.0]], [[-1.0, -3.0]]]])
    labels = torch.tensor([[1.0, 0.0]])
    s = temperature_pool(maps, 1.0)[0]
    sig = torch.sigmoid(s)
    expect = -(torch.log(sig[0]) + torch.log(1 - sig[1])) / 2
    assert generation_loss(maps, labels, 1.0).item() == pytest.approx(expect.item(), abs=1e-6)


def test_regularisation_loss_hand_computed():
    m1 = torch.tensor([[[[1.0, 0.0]], [[0.5, 0.5]]]])
    m2 = torch.tensor([[[[0.0, 0.0]], [[0.0, 0.0]]]])
    assert regularisation_loss(m1, m2, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(0.5)
    assert regularisation_loss(m1, m2, torch.tensor([[1.0, 1.0]])).item() == pytest.approx(0.5)
    assert regularisation_loss(m1, m2, torch.tensor([[0.0, 1.0]])).item() == pytest.approx(0.5)
    m2[0, 1] = 0.5
    assert regularisation_loss(m1, m2, torch.tensor([[1.0, 1.0]])).item() == pytest.approx(0.25)
    assert regularisation_loss(m1, m2, torch.tensor([[0.0, 0.0]])).item() == 0.0


def test_regularisation_is_zero_for_an_equivariant_model():
    torch.manual_seed(2)
    x = torch.randn(2, 3, 16, 16)
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    cnn = create_model("cam", num_classes=2, backbone="simple", width=4, depth=2).eval()
    out = usage_loss(cnn, x, labels, tau=1.0, augmentation="identity", adjust=False)
    assert out["reg"].item() == 0.0
    # a per-pixel (1×1) network is exactly flip-equivariant
    body = nn.Conv2d(3, 6, 1)
    body.out_dim, body.stride = 6, 1
    pointwise = CAMNet(_Plain(body), 2, "simple").eval()
    assert usage_loss(pointwise, x, labels, tau=1.0, augmentation="flip", adjust=False)["reg"].item() < 1e-6
    assert usage_loss(cnn, x, labels, tau=1.0, augmentation="flip", adjust=False)["reg"].item() > 1e-4


class _Plain(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body, self.out_dim, self.stride = body, body.out_dim, body.stride

    def forward(self, x, adjust=False):
        return self.body(x), []


def test_usage_loss_total_and_backward():
    torch.manual_seed(3)
    m = create_model("cam", num_classes=3, backbone="vit", embed_dim=16, depth=1, num_heads=2, patch_size=8,
                     img_size=32)
    x = torch.randn(2, 3, 32, 32)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    out = usage_loss(m, x, labels, tau=default_tau(True), lam=0.5, augmentation="flip_rescale", adjust=True)
    assert out["loss"].item() == pytest.approx((out["gen"] + 0.5 * out["reg"]).item(), rel=1e-6)
    out["loss"].backward()
    assert m.classifier.weight.grad is not None and torch.isfinite(m.classifier.weight.grad).all()


def test_defaults_follow_the_backbone_rule():
    assert default_tau(False) > default_tau(True)
    assert default_bg_threshold(True) == 0.55 and default_bg_threshold(False) == 0.15


def test_views_invert():
    x = torch.arange(64.0).reshape(1, 1, 8, 8)
    forward, inverse = make_view("flip")
    assert torch.equal(inverse(forward(x), (8, 8)), x)
    forward, inverse = make_view("flip_rescale", 0.5)
    y = forward(x)
    assert y.shape == (1, 1, 4, 4)
    assert torch.allclose(y, F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False).flip(-1))
    assert inverse(y, (8, 8)).shape == (1, 1, 8, 8)
    with pytest.raises(ConfigError):
        make_view("rotate")


def test_self_adaptive_adjustment_perturbs_only_the_second_view():
    torch.manual_seed(4)
    m = create_model("cam", num_classes=2, backbone="vit", embed_dim=16, depth=2, num_heads=2, patch_size=8,
                     img_size=32, drop_path=0.5).train()
    x = torch.randn(4, 3, 32, 32)
    labels = torch.ones(4, 2)
    assert torch.equal(m.cam_logits(x), m.cam_logits(x))  # the reference view is deterministic
    assert usage_loss(m, x, labels, tau=0.1, augmentation="identity", adjust=False)["reg"].item() == 0.0
    assert usage_loss(m, x, labels, tau=0.1, augmentation="identity", adjust=True)["reg"].item() > 1e-4
