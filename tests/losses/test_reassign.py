"""Label-reassign loss (geolesf.losses.reassign) on a constructed two-class embedding map (methods.md §8.5 (c))."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from geolesf.losses.reassign import (
    class_prototypes,
    label_reassign_loss,
    reassign_labels,
)


def _case():
    emb = torch.zeros(1, 2, 4, 4)
    emb[0, 0, :, :2] = 1.0  # left half: class 0 direction
    emb[0, 1, :, 2:] = 1.0  # right half: class 1 direction
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[..., 2:] = 1
    labels[0, 1, 0] = 1  # a deliberately flipped pixel in the class-0 half
    return emb, labels


def test_prototypes_are_class_means():
    emb, labels = _case()
    protos, present = class_prototypes(emb, labels, 3)
    assert present.tolist() == [[True, True, False]]
    assert torch.allclose(protos[0, 0], torch.tensor([1.0, 0.0]))
    assert torch.allclose(protos[0, 1], torch.tensor([1 / 9, 8 / 9]))


def test_flipped_pixel_is_reassigned_and_others_untouched():
    emb, labels = _case()
    allowed = torch.tensor([[True, True]])
    new, moved = reassign_labels(emb, labels, allowed)
    assert moved.sum().item() == 1 and moved[0, 1, 0]
    assert new[0, 1, 0].item() == 0
    expect = labels.clone()
    expect[0, 1, 0] = 0
    assert torch.equal(new, expect)


def test_reassign_respects_allowed_classes_ignore_and_threshold():
    emb, labels = _case()
    new, moved = reassign_labels(emb, labels, torch.tensor([[False, True]]))
    assert not (new == 0).any()  # class 0 is not among the image's classes: nothing is moved to it
    assert not moved[0, 1, 0]
    ignored = labels.clone()
    ignored[0, 1, 0] = 255
    new, moved = reassign_labels(emb, ignored, torch.tensor([[True, True]]))
    assert not moved.any() and new[0, 1, 0].item() == 255
    _, moved = reassign_labels(emb, labels, torch.tensor([[True, True]]), temperature=10.0)
    assert not moved.any()  # a soft q never exceeds 0.9


def test_loss_is_cross_entropy_on_the_reassigned_pixel():
    emb, labels = _case()
    torch.manual_seed(0)
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    loss, moved = label_reassign_loss(logits, emb, labels, torch.tensor([[True, True]]))
    expect = F.cross_entropy(logits[0, :, 1, 0][None], torch.tensor([0]))
    assert loss.item() == pytest.approx(expect.item(), rel=1e-6)
    loss.backward()
    grad = logits.grad.abs().sum(1)[0]
    assert grad[1, 0] > 0 and grad.sum() == grad[1, 0]
    correct = labels.clone()
    correct[0, 1, 0] = 0
    loss, moved = label_reassign_loss(logits, emb, correct, torch.tensor([[True, True]]))
    assert loss.item() == 0.0 and not moved.any()


def test_reassign_q_and_loss_hand_computed_with_two_moved_pixels():
    """1×4 map, 2-D embeddings, three classes (class 2 not allowed), T = 0.1, threshold 0.9.

    e = (1,0) (1,0) (0,1) (0,1) with pseudo labels 0 1 1 0: μ₀ = mean(e0, e3) = (½, ½),
    μ₁ = mean(e1, e2) = (½, ½) — equal prototypes, q = (½, ½): nothing moves. Labels 0 0 1 0 instead:
    μ₀ = mean(e0, e1, e3) = (⅔, ⅓), μ₁ = e2 = (0, 1). Pixel 3 (label 0, e = (0,1)):
    cos(e3, μ₀) = 1/√5, cos(e3, μ₁) = 1 → q₁ = 1/(1 + exp((1/√5 − 1)/0.1)) > 0.9 → moved to 1.
    Pixels 0, 1 (label 0, e = (1,0)): cos(·, μ₀) = 2/√5, cos(·, μ₁) = 0 → q₀ = 1/(1 + exp(−(2/√5)/0.1)), stays.
    """
    emb = torch.tensor([[[[1.0, 1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0, 1.0]]]])
    allowed = torch.tensor([[True, True, False]])
    _, moved = reassign_labels(emb, torch.tensor([[[0, 1, 1, 0]]]), allowed)
    assert not moved.any()
    labels = torch.tensor([[[0, 0, 1, 0]]])
    q1_px3 = 1 / (1 + math.exp((1 / math.sqrt(5) - 1) / 0.1))
    assert q1_px3 > 0.9
    new, moved = reassign_labels(emb, labels, allowed)
    assert new.tolist() == [[[0, 0, 1, 1]]] and moved.tolist() == [[[False, False, False, True]]]
    # just above q₁ nothing moves; just below, it does
    assert not reassign_labels(emb, labels, allowed, threshold=q1_px3 + 1e-4)[1].any()
    assert reassign_labels(emb, labels, allowed, threshold=q1_px3 - 1e-4)[1].sum().item() == 1
    # two moved pixels: pixel 0 and pixel 3 both carry the wrong label (1 0 1 0 → 0 0 1 1)
    labels2 = torch.tensor([[[1, 0, 1, 0]]])  # μ₀ = mean(e1, e3) = (½, ½), μ₁ = mean(e0, e2) = (½, ½)
    assert not reassign_labels(emb, labels2, allowed)[1].any()  # symmetric prototypes: no evidence
    emb3 = torch.tensor([[[[1.0, 1.0, 1.0, 0.0, 0.0]], [[0.0, 0.0, 0.0, 1.0, 1.0]]]])
    labels3 = torch.tensor([[[1, 0, 0, 1, 0]]])  # μ₀ = mean(e1, e2, e4) = (⅔, ⅓), μ₁ = mean(e0, e3) = (½, ½)
    # pixel 0 (label 1, e = (1,0)): cos μ₀ = 2/√5, cos μ₁ = 1/√2 → q₀ = 1/(1 + exp((1/√2 − 2/√5)/0.1))
    q0_px0 = 1 / (1 + math.exp((1 / math.sqrt(2) - 2 / math.sqrt(5)) / 0.1))
    # pixel 4 (label 0, e = (0,1)): cos μ₀ = 1/√5, cos μ₁ = 1/√2 → q₁ = 1/(1 + exp((1/√5 − 1/√2)/0.1))
    q1_px4 = 1 / (1 + math.exp((1 / math.sqrt(5) - 1 / math.sqrt(2)) / 0.1))
    assert q0_px0 < 0.9 < q1_px4  # only pixel 4 moves at 0.9; both at threshold 0.5
    allowed3 = torch.tensor([[True, True]])
    assert reassign_labels(emb3, labels3, allowed3)[1].tolist() == [[[False, False, False, False, True]]]
    new, moved = reassign_labels(emb3, labels3, allowed3, threshold=0.5)
    assert moved.tolist() == [[[True, False, False, False, True]]] and new.tolist() == [[[0, 0, 0, 1, 1]]]
    # L_LR = mean over the two moved pixels of −log softmax(z)[ỹ]
    z = [[0.5, -1.0], [0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [1.5, 0.5]]  # logits per pixel (class 0, class 1)
    logits = torch.tensor(z).T.reshape(1, 2, 1, 5).contiguous().requires_grad_(True)
    loss, _ = label_reassign_loss(logits, emb3, labels3, allowed3, threshold=0.5)

    def nll(v, k):
        return -(v[k] - math.log(math.exp(v[0]) + math.exp(v[1])))

    expect = (nll(z[0], 0) + nll(z[4], 1)) / 2
    assert loss.item() == pytest.approx(expect, abs=1e-6)
    loss.backward()
    # ∂L/∂z = (softmax(z) − onehot(ỹ)) / 2 on the moved pixels, 0 elsewhere; its sign makes gradient
    # descent raise the re-assigned class
    for px, target in ((0, 0), (4, 1)):
        p = [math.exp(v) / (math.exp(z[px][0]) + math.exp(z[px][1])) for v in z[px]]
        for k in range(2):
            assert logits.grad[0, k, 0, px].item() == pytest.approx((p[k] - (k == target)) / 2, abs=1e-6)
        assert logits.grad[0, target, 0, px].item() < 0
    assert logits.grad[0, :, 0, 1:4].abs().max().item() == 0.0


def test_agreement_prototypes_from_agreeing_pixels_and_moves_only_where_predicted():
    """``prediction``: prototypes average only pixels predicted as labelled; a move needs the prediction too."""
    emb, labels = _case()
    allowed = torch.tensor([[True, True]])
    pred = labels.clone()
    pred[0, 1, 0] = 0  # the classifier already says 0 at the flipped pixel
    # prototypes without the flipped pixel: class 0 = (1, 0) exactly, class 1 = (0, 1) exactly
    protos, _ = class_prototypes(emb, torch.where(pred == labels, labels, torch.full_like(labels, 255)), 2)
    assert torch.allclose(protos[0], torch.eye(2))
    new, moved = reassign_labels(emb, labels, allowed, prediction=pred)
    assert moved.sum().item() == 1 and moved[0, 1, 0] and new[0, 1, 0] == 0
    # the classifier agrees with the (wrong) label there: the pixel is not moved, whatever the prototypes say
    new, moved = reassign_labels(emb, labels, allowed, prediction=labels)
    assert not moved.any() and torch.equal(new, labels)
    # label_reassign_loss(agree=True) takes the prediction from the logits' argmax
    logits = torch.zeros(1, 2, 4, 4)
    logits[:, 1] = labels.float() * 2 - 1  # argmax = label ...
    logits[0, :, 1, 0] = torch.tensor([1.0, -1.0])  # ... except the flipped pixel, predicted 0
    loss, moved = label_reassign_loss(logits, emb, labels, allowed, agree=True)
    assert moved.sum().item() == 1
    assert loss.item() == pytest.approx(F.cross_entropy(logits[0, :, 1, 0][None], torch.tensor([0])).item())
