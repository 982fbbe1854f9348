"""Single-stage WSSS: the joint loss and its pseudo labels on tiny models."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from geolesf.methods.wsss.single_stage import (
    SingleStageOptions,
    SingleStageWSSS,
    pseudo_labels,
    refined_scores,
    segment,
    single_stage_loss,
)
from geolesf.registry import create_model


class _Fixed:
    """A stand-in for :class:`SingleStageWSSS` whose heads return fixed leaf tensors."""

    def __init__(self, **out):
        self.out = {k: v.clone().requires_grad_(True) for k, v in out.items()}
        self.cam = SimpleNamespace(is_transformer=False)

    def forward_all(self, images):
        return {**self.out, "attn": []}


def _sig(v):
    return 1 / (1 + math.exp(-v))


def _nll(z, k):
    return -(z[k] - math.log(sum(math.exp(v) for v in z)))


def _l1_mean(u, v):
    return sum(abs(a - b) for a, b in zip(u, v)) / len(u)


def _cos(u, v):
    return sum(a * b for a, b in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))


# a 2×2 feature map, 2 foreground classes (class 1 of the tags absent), K = 3 segmentation classes
MAPS = [[[2.0, 0.2], [0.2, 1.6]], [[3.0, 3.0], [3.0, 3.0]]]  # the absent class's high map must not count
LOGITS = [0.7, -0.4]
EMB = [(1.0, 0.0), (0.0, 1.0), (0.2, 0.9), (0.1, 0.8)]  # pixels 0..3 (row-major), E = 2
SEG = [(0.2, 1.0, -0.5), (1.5, 0.1, 0.0), (0.3, -0.2, 0.4), (-0.1, 0.6, 0.2)]  # pixel → (bg, c1, c2)


def _fixed_model():
    emb = torch.tensor(EMB).T.reshape(1, 2, 2, 2)
    seg = torch.tensor(SEG).T.reshape(1, 3, 2, 2)
    return _Fixed(maps=torch.tensor([MAPS]), logits=torch.tensor([LOGITS]), seg=seg, emb=emb)


def _hand_parts(lam_aa, lam_lr):
    """Every term of L = L_cls + L_seg + λ₁ L_AA + λ₂ L_LR for the fixed case, from methods.md §8."""
    y = [1.0, 0.0]
    cls = -sum(t * math.log(_sig(x)) + (1 - t) * math.log(1 - _sig(x)) for x, t in zip(LOGITS, y)) / 2
    # pseudo labels: normalised CAM of the tagged class vs the constant background 0.3, margin 0.1
    cam = [v / (2.0 + 1e-5) for row in MAPS[0] for v in row]  # 1.0, 0.1, 0.1, 0.8
    pseudo = [1 if c > 0.3 else 0 for c in cam]
    assert pseudo == [1, 0, 0, 1] and min(abs(c - 0.3) for c in cam) > 0.1  # every pixel is confident
    seg = sum(_nll(SEG[p], pseudo[p]) for p in range(4)) / 4
    # AA, r = 1.5 on 2×2: all 6 pairs; positives fg (0,3), bg (1,2); negatives (0,1) (0,2) (1,3) (2,3)
    def pos(i, j):
        d = _l1_mean(EMB[i], EMB[j])
        return (1 - math.exp(-d)) ** 2 * d

    def neg(i, j):
        d = _l1_mean(EMB[i], EMB[j])
        return math.exp(-d) ** 2 * -math.log(1 - math.exp(-d))

    aa = pos(0, 3) + pos(1, 2) + 2 * (neg(0, 1) + neg(0, 2) + neg(1, 3) + neg(2, 3)) / 4
    # LR: prototypes μ_bg = mean(e1, e2), μ_c1 = mean(e0, e3); class 2 is not allowed
    mu = {0: [(a + b) / 2 for a, b in zip(EMB[1], EMB[2])], 1: [(a + b) / 2 for a, b in zip(EMB[0], EMB[3])]}
    moved = {}
    for p in range(4):
        s = {c: math.exp(_cos(EMB[p], m) / 0.1) for c, m in mu.items()}
        best = max(s, key=s.get)
        if s[best] / sum(s.values()) > 0.9 and best != pseudo[p]:
            moved[p] = best
    assert moved == {3: 0}  # pixel 3 (pseudo label c1) lies next to the background prototype
    lr = sum(_nll(SEG[p], c) for p, c in moved.items()) / len(moved)
    total = cls + seg + lam_aa * aa + lam_lr * lr
    return {"cls": cls, "seg": seg, "aa": aa, "lr": lr, "loss": total, "pseudo": pseudo, "moved": moved}


def test_joint_loss_hand_computed_on_a_fixed_2x2_case():
    opts = SingleStageOptions(bg_threshold=0.3, margin=0.1, refine="none", radius=1.5, gamma=2.0,
                              lambda_aa=0.5, lambda_lr=2.0)
    model = _fixed_model()
    parts = single_stage_loss(model, torch.zeros(1, 3, 16, 16), torch.tensor([[1.0, 0.0]]), opts)
    hand = _hand_parts(0.5, 2.0)
    for k in ("cls", "seg", "aa", "lr", "loss"):
        assert parts[k].item() == pytest.approx(hand[k], abs=1e-6), k
    assert parts["reassigned"].item() == 0.25  # one of four pixels
    parts["loss"].backward()
    out = model.out
    assert out["maps"].grad is None  # pseudo labels come from detached CAMs
    # ∂L/∂logits = (σ(x) − y) / C
    assert out["logits"].grad[0].tolist() == pytest.approx([(_sig(0.7) - 1) / 2, _sig(-0.4) / 2], abs=1e-6)
    # ∂L/∂seg at pixel p = (softmax − onehot(ŷ_p)) / 4 + λ₂ (softmax − onehot(ỹ_p)) [p re-assigned]
    for p in range(4):
        z = SEG[p]
        prob = [math.exp(v) / sum(math.exp(u) for u in z) for v in z]
        for k in range(3):
            g = (prob[k] - (k == hand["pseudo"][p])) / 4
            if p in hand["moved"]:
                g += 2.0 * (prob[k] - (k == hand["moved"][p]))
            assert out["seg"].grad[0, k, p // 2, p % 2].item() == pytest.approx(g, abs=1e-6), (p, k)
    # the LR term pushes pixel 3 towards the background: descent raises its background logit
    assert out["seg"].grad[0, 0, 1, 1].item() < 0
    # ∂L/∂emb = λ₁ ∂L_AA/∂emb only (the prototypes and the re-assignment are stop-gradient):
    # central differences of the hand-written L_AA
    eps = 1e-4
    for p in range(4):
        for c in range(2):
            def aa_at(delta):
                saved = EMB[p]
                EMB[p] = tuple(v + (delta if k == c else 0.0) for k, v in enumerate(saved))
                try:
                    return _hand_parts(0.5, 2.0)["aa"]
                finally:
                    EMB[p] = saved

            fd = 0.5 * (aa_at(eps) - aa_at(-eps)) / (2 * eps)
            assert out["emb"].grad[0, c, p // 2, p % 2].item() == pytest.approx(fd, abs=1e-4), (p, c)


@pytest.mark.parametrize("lam_aa,lam_lr", [(1.0, 1.0), (0.0, 3.0), (2.0, 0.0)])
def test_joint_loss_weights_each_term(lam_aa, lam_lr):
    opts = SingleStageOptions(bg_threshold=0.3, margin=0.1, refine="none", radius=1.5, lambda_aa=lam_aa,
                              lambda_lr=lam_lr)
    parts = single_stage_loss(_fixed_model(), torch.zeros(1, 3, 16, 16), torch.tensor([[1.0, 0.0]]), opts)
    assert parts["loss"].item() == pytest.approx(_hand_parts(lam_aa, lam_lr)["loss"], abs=1e-6)


@pytest.mark.parametrize("backbone,kw", [("simple", {"width": 8, "depth": 2}),
                                         ("vit", {"embed_dim": 16, "depth": 2, "num_heads": 2, "patch_size": 8,
                                                  "img_size": 32})])
def test_joint_loss_gradient_routing_on_real_models(backbone, kw):
    """Real backbones: the embedding head learns from L_AA alone, the CAM classifier from L_cls alone."""
    torch.manual_seed(0)
    net = create_model("cam", num_classes=3, backbone=backbone, **kw)
    model = SingleStageWSSS(net, 4, embed_dim=8, hidden=16)
    x = torch.randn(2, 3, 16, 16)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    opts = SingleStageOptions(bg_threshold=0.3, margin=0.05, lambda_aa=0.5, lambda_lr=2.0, radius=2)

    def grads(key):
        model.zero_grad(set_to_none=False)
        torch.manual_seed(1)
        single_stage_loss(model, x, labels, opts)[key].backward()
        return model.embed_head.weight.grad.clone(), model.cam.classifier.weight.grad.clone()

    emb_total, cls_total = grads("loss")
    emb_aa, _ = grads("aa")
    _, cls_only = grads("cls")
    assert emb_total.abs().sum() > 0
    assert torch.allclose(emb_total, 0.5 * emb_aa, atol=1e-7)
    assert torch.allclose(cls_total, cls_only, atol=1e-7)
    assert segment(model.eval(), x).shape == (2, 4, 16, 16)


def test_warmup_trains_the_classifier_only():
    net = create_model("cam", num_classes=2, backbone="simple", width=4, depth=2)
    model = SingleStageWSSS(net, 3, embed_dim=4, hidden=8)
    parts = single_stage_loss(model, torch.randn(1, 3, 16, 16), torch.tensor([[1.0, 0.0]]),
                              SingleStageOptions(warmup_steps=5), step=2)
    assert parts["loss"].item() == parts["cls"].item() and parts["seg"].item() == 0.0


def test_pseudo_labels_only_use_tagged_classes_and_have_an_ignore_band():
    torch.manual_seed(1)
    net = create_model("cam", num_classes=3, backbone="simple", width=4, depth=2)
    model = SingleStageWSSS(net, 4, embed_dim=4, hidden=8).eval()
    x = torch.randn(1, 3, 32, 32)
    labels = torch.tensor([[0.0, 1.0, 0.0]])
    out = model.forward_all(x)
    for refine in ("none", "embedding"):
        opts = SingleStageOptions(bg_threshold=0.3, margin=0.2, refine=refine)
        pl, conf = pseudo_labels(out, labels, opts, is_transformer=False)
        assert set(pl.unique().tolist()) <= {0, 2, 255}
        assert torch.equal(pl == 255, conf < 0.2)
    plain = refined_scores(out["maps"], labels, SingleStageOptions(refine="none"))
    walked = refined_scores(out["maps"], labels, SingleStageOptions(refine="embedding"), emb=out["emb"])
    assert torch.allclose(walked[:, 0], plain[:, 0])  # the constant background score is preserved
    assert not torch.allclose(walked, plain)
