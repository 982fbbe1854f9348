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


def _nice_case():
    """Class 0 in the image. Rows: negative v = 0.99999 | positive top class | negative v = 0.02 | v = 0.0005
    | negative v = 0.05 exactly (= tau: counted, ``v >= tau``) | negative v = 0.07."""
    labels = torch.tensor([1.0, 0.0], dtype=torch.float64)
    mil = torch.tensor([[0.00001, 0.99999], [0.6, 0.2], [0.001, 0.02], [0.0002, 0.0005], [0.0, 0.05], [0.01, 0.07]],
                       dtype=torch.float64)
    return mil, labels


def test_nice_standalone_variant_ndi_py_tau_005_eps_1e5():
    from geolesf.methods.wsod.ndi import nice_params

    assert nice_params("standalone") == (0.05, 1e-5)
    assert nice_params("standalone", tau=0.1) == (0.1, 1e-5)  # follows ndi_tau
    mil, labels = _nice_case()
    # rows 0, 4, 5 count (row 2 is below tau = 0.05); eps 1e-5 matters next to 1 - v = 1e-5
    expected = -(math.log(1e-5 + 1e-5) + math.log(0.95 + 1e-5) + math.log(0.93 + 1e-5)) / 6
    assert float(nice_loss(mil, labels, *nice_params("standalone"))) == pytest.approx(expected, rel=1e-9)
    assert float(nice_loss(mil, labels)) == pytest.approx(expected, rel=1e-9)  # the defaults


def test_nice_training_variant_model_builder_threshold_0001_eps_1e6():
    from geolesf.methods.wsod.ndi import nice_params

    assert nice_params("training") == (0.001, 1e-6)
    assert nice_params("training", tau=0.3) == (0.001, 1e-6)  # fixed in model_builder.py, not tau
    mil, labels = _nice_case()
    # rows 0, 2, 4, 5 count (0.02 >= 0.001), row 3 does not (0.0005 < 0.001)
    expected = -(math.log(1e-5 + 1e-6) + math.log(0.98 + 1e-6) + math.log(0.95 + 1e-6) + math.log(0.93 + 1e-6)) / 6
    assert float(nice_loss(mil, labels, *nice_params("training"))) == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="nice_variant: expected 'standalone'"):
        nice_params("official")


def test_detector_nice_variant_reaches_the_loss():
    import numpy as np

    from geolesf.errors import ModelError
    from geolesf.registry import create_model

    torch.manual_seed(0)
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    rois = torch.tensor([[x, y, x + 15, y + 15] for x in (0, 16, 32, 48) for y in (0, 24, 40)], dtype=torch.float32)
    labels = torch.tensor([1.0, 0.0, 0.0])
    values = {}
    for variant, (tau, eps) in (("standalone", (0.05, 1e-5)), ("training", (0.001, 1e-6))):
        torch.manual_seed(0)
        model = create_model("ndi-wsod", num_classes=3, backbone="tiny", width=8, hidden=16, dropout=0.0,
                             nice_variant=variant)
        assert (model.nice_tau, model.nice_eps) == (tau, eps)
        out = model(model.preprocess(image), rois)
        got = float(model.losses(out, rois, labels)["nice"].detach())
        mil, refine = out["mil_score"].detach(), [p.detach() for p in out["refine"]]
        # recomputed here without nice_loss: count top-class negatives with v >= tau, mean over R
        want = 0.0
        for k, s in enumerate([mil] + refine):
            v, c = s.max(dim=1)
            if k > 0:
                keep = (c != 0) & (labels[(c - 1).clamp(min=0)] <= 0)
            else:
                keep = labels[c] <= 0
            keep &= v >= tau
            want += float(-(torch.log(1 - v[keep].double() + eps)).sum() / len(v))
        assert got == pytest.approx(want, rel=1e-5, abs=1e-9)
        values[variant] = got
    # with random weights the MIL scores (softmax x softmax over 12 proposals) lie below 0.05:
    # only the training variant's 0.001 threshold sees them
    assert values["training"] > values["standalone"]
    with pytest.raises(ModelError, match="nice_variant"):
        create_model("ndi-wsod", num_classes=3, backbone="tiny", width=8, hidden=16, nice_variant="ndi")
