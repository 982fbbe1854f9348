"""NDI bookkeeping (memory update / merge rule) and the NCL and NICE losses on constructed cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from geolesf.methods.wsod.ndi import NDIMemory, ncl_loss, nice_loss


def test_memory_collects_only_confident_negatives_and_merges_when_full():
    mem = NDIMemory(num_classes=2, dim=2, length=2, tau=0.05)
    labels = torch.tensor([1.0, 0.0])  # class 0 is in the image, class 1 is not
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0], [3.0, 3.0], [2.0, 1.0]])
    mil = torch.tensor([
        [0.10, 0.50],  # negative (top class 1), s = 0.5 -> slot 0
        [0.00, 0.30],  # negative, s = 0.3 -> slot 1 (queue now full)
        [0.60, 0.20],  # top class 0 is an image label: not collected
        [0.01, 0.04],  # top class 1 but v < tau: not collected
        [0.10, 0.20],  # negative, s = 0.2: merged into the most similar entry ([1, 0])
    ])
    assert mem.update(feats, mil, labels) == 3
    rho = 0.2 / (0.2 + 0.5 + 1e-4)
    expected_f = rho * torch.tensor([2.0, 1.0]) + (1 - rho) * torch.tensor([1.0, 0.0])
    torch.testing.assert_close(mem.features[1, 0], expected_f)
    assert float(mem.scores[1, 0]) == pytest.approx(rho * 0.2 + (1 - rho) * 0.5, rel=1e-6)
    torch.testing.assert_close(mem.features[1, 1], torch.tensor([0.0, 1.0]))
    assert float(mem.scores[1, 1]) == pytest.approx(0.3)
    assert mem.count.tolist() == [0, 2]
    assert mem.features[0].abs().sum() == 0  # nothing stored for the positive class


def test_memory_update_carries_no_gradient():
    mem = NDIMemory(num_classes=2, dim=3, length=5)
    f = torch.randn(4, 3, requires_grad=True)
    mil = torch.tensor([[0.0, 0.9]] * 4)
    mem.update(f, mil, torch.tensor([1.0, 0.0]))
    assert not mem.features.requires_grad and mem.count.tolist() == [0, 4]


def test_nice_loss_zero_when_confident_top_classes_are_image_labels():
    labels = torch.tensor([1.0, 0.0, 1.0])
    mil = torch.tensor([[0.6, 0.1, 0.2], [0.1, 0.02, 0.7], [0.3, 0.04, 0.1]])  # row 2: class 1 but v < tau
    assert float(nice_loss(mil, labels)) == 0.0


def test_nice_loss_value_with_and_without_background_column():
    labels = torch.tensor([1.0, 0.0])
    mil = torch.tensor([[0.1, 0.5], [0.6, 0.2]])
    assert float(nice_loss(mil, labels)) == pytest.approx(-math.log(1 - 0.5 + 1e-5) / 2, rel=1e-6)
    refine = torch.tensor([[0.7, 0.2, 0.1],   # background on top: not a negative
                           [0.1, 0.1, 0.8]])  # class 1 on top, absent from the image
    assert float(nice_loss(refine, labels)) == pytest.approx(-math.log(1 - 0.8 + 1e-5) / 2, rel=1e-6)


def test_ncl_value_and_gradient_points_along_minus_grad_cos():
    mem = NDIMemory(num_classes=2, dim=3, length=5, tau=0.05)
    m = torch.tensor([[1.0, 2.0, 0.5]])
    mem.update(m, torch.tensor([[0.0, 0.4]]), torch.tensor([1.0, 0.0]))  # stored with score 0.4
    f = torch.tensor([[0.3, -1.0, 2.0]], requires_grad=True)
    mil = torch.tensor([[0.1, 0.3]])  # top class 1, v >= tau
    loss, n_cos = ncl_loss(f, mil, mem, alpha=0.3)
    cos = F.cosine_similarity(f, m)[0]
    assert float(loss.detach()) == pytest.approx(0.3 * float(cos.detach()) * 0.4 / 2, rel=1e-6)
    assert float(n_cos[0]) == pytest.approx(float(cos.detach()), rel=1e-6)
    loss.backward()
    f2 = f.detach().clone().requires_grad_(True)
    F.cosine_similarity(f2, m)[0].backward()
    torch.testing.assert_close(f.grad, 0.3 * 0.4 / 2 * f2.grad)
    # A gradient step on L_NCL lowers the similarity to the stored negative.
    with torch.no_grad():
        stepped = f - 0.1 * f.grad
    assert float(F.cosine_similarity(stepped, m)[0]) < float(cos.detach())


def test_ncl_ignores_low_scores_and_empty_memory():
    mem = NDIMemory(num_classes=2, dim=2, length=5, tau=0.05)
    f = torch.randn(2, 2)
    loss, n_cos = ncl_loss(f, torch.tensor([[0.2, 0.1], [0.01, 0.02]]), mem)
    assert float(loss) == 0.0 and n_cos.tolist() == [0.0, 0.0]
