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


def _pool(values, tau):
    """``s = Σ_p softmax_p(v/τ) · v_p`` written out."""
    w = [math.exp(v / tau) for v in values]
    return sum(wi * v for wi, v in zip(w, values)) / sum(w)


def _soft_margin(scores, tags):
    """Multi-label soft-margin loss ``−1/C Σ_c [y log σ(s) + (1 − y) log(1 − σ(s))]`` written out."""
    sig = [1 / (1 + math.exp(-v)) for v in scores]
    return -sum(t * math.log(q) + (1 - t) * math.log(1 - q) for q, t in zip(sig, tags)) / len(tags)


def test_generation_loss_hand_computed():
    maps = torch.tensor([[[[0.0, 2.0]], [[-1.0, -3.0]]]])
    labels = torch.tensor([[1.0, 0.0]])
    e = math.e
    s0 = 2 * e**2 / (1 + e**2)  # softmax([0, 2]) · [0, 2]
    s1 = (-e**-1 - 3 * e**-3) / (e**-1 + e**-3)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    expect = -(math.log(sig(s0)) + math.log(1 - sig(s1))) / 2
    assert generation_loss(maps, labels, 1.0).item() == pytest.approx(expect, abs=1e-6)


@pytest.mark.parametrize("tau", [1.0, 0.1, 5.0])
def test_generation_loss_on_2x2_maps_three_classes_two_images(tau):
    m = [[[[0.5, -0.2], [1.0, 0.1]], [[-1.0, 0.3], [0.0, 2.0]], [[0.2, 0.2], [0.4, -0.6]]],
         [[[-0.3, 0.0], [0.7, 0.9]], [[1.2, -0.4], [0.5, 0.5]], [[-2.0, 1.0], [0.0, 0.3]]]]
    tags = [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    expect = sum(_soft_margin([_pool([v for row in mc for v in row], tau) for mc in mi], ti)
                 for mi, ti in zip(m, tags)) / 2
    got = generation_loss(torch.tensor(m), torch.tensor(tags), tau)
    assert got.item() == pytest.approx(expect, abs=1e-6)


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


class _Affine(nn.Module):
    """``cam_logits(x) = w·x + P (+ 0.25 when adjusted)``: not flip-equivariant because of the fixed ``P``."""

    POS = [[[0.4, 0.0, -0.3]], [[0.1, 0.5, 0.2]]]

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.5))

    def cam_logits(self, x, adjust=False):
        return self.w * x + torch.tensor([self.POS]) + (0.25 if adjust else 0.0)


X = [[[0.2, 1.0, -0.5]], [[0.3, -0.1, 0.6]]]  # one image, 2 classes, a 1×3 map


def _usage_hand(w, tau, lam, tags):
    """``L_gen(τ) + λ·L_reg`` for :class:`_Affine` with the flip view, written out (methods.md §5.2)."""
    pos = [row[0] for row in _Affine.POS]
    x = [row[0] for row in X]
    m1 = [[w * xv + pv for xv, pv in zip(x[c], pos[c])] for c in range(2)]
    # view 2: A = flip, adjusted network, A⁻¹ = flip back → w·x + flip(P) + 0.25
    m2 = [[w * xv + pv + 0.25 for xv, pv in zip(x[c], pos[c][::-1])] for c in range(2)]
    gen = _soft_margin([_pool(m, tau) for m in m1], tags)

    def norm(m):
        r = [max(v, 0.0) for v in m]
        return [v / (max(r) + 1e-5) for v in r]

    per_class = [sum(abs(a - b) for a, b in zip(norm(m1[c]), norm(m2[c]))) / 3 for c in range(2)]
    labelled = [per_class[c] for c in range(2) if tags[c] > 0]
    reg = sum(labelled) / len(labelled)
    return gen, reg, gen + lam * reg


@pytest.mark.parametrize("tags", [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
def test_usage_loss_hand_computed_with_gradient(tags):
    model = _Affine()
    out = usage_loss(model, torch.tensor([X]), torch.tensor([tags]), tau=0.5, lam=0.7, augmentation="flip",
                     adjust=True)
    gen, reg, total = _usage_hand(1.5, 0.5, 0.7, tags)
    assert out["gen"].item() == pytest.approx(gen, abs=1e-6)
    assert out["reg"].item() == pytest.approx(reg, abs=1e-6)
    assert out["loss"].item() == pytest.approx(total, abs=1e-6)
    assert reg > 0.05  # the case is not trivially equivariant
    out["loss"].backward()
    eps = 1e-4
    fd = (_usage_hand(1.5 + eps, 0.5, 0.7, tags)[2] - _usage_hand(1.5 - eps, 0.5, 0.7, tags)[2]) / (2 * eps)
    assert model.w.grad.item() == pytest.approx(fd, abs=1e-4)
    # λ = 0: the regulariser neither counts nor reaches the gradient
    model.w.grad = None
    out0 = usage_loss(model, torch.tensor([X]), torch.tensor([tags]), tau=0.5, lam=0.0, augmentation="flip")
    assert out0["loss"].item() == pytest.approx(gen, abs=1e-6) and out0["reg"].item() == 0.0
    out0["loss"].backward()
    fd0 = (_usage_hand(1.5 + eps, 0.5, 0.7, tags)[0] - _usage_hand(1.5 - eps, 0.5, 0.7, tags)[0]) / (2 * eps)
    assert model.w.grad.item() == pytest.approx(fd0, abs=1e-4)


def test_usage_loss_backward_reaches_a_real_vit():
    torch.manual_seed(3)
    m = create_model("cam", num_classes=3, backbone="vit", embed_dim=16, depth=1, num_heads=2, patch_size=8,
                     img_size=32)
    x = torch.randn(2, 3, 32, 32)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    out = usage_loss(m, x, labels, tau=default_tau(True), lam=0.5, augmentation="flip_rescale", adjust=True)
    out["loss"].backward()
    g = m.classifier.weight.grad
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    # the logits returned are the τ-pooled scores of the un-adjusted first view
    with torch.no_grad():
        maps = m.cam_logits(x)
    assert torch.allclose(out["logits"], temperature_pool(maps, default_tau(True)), atol=1e-6)


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
