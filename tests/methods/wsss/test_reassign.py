"""Label-reassign loss on a constructed two-class embedding map (methods.md §8.5 (c))."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from geolesf.methods.wsss.reassign import (
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
