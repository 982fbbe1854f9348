"""Pseudo-label rounds and the mean teacher of the sparse (points / scribbles) objective, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from geolesf.errors import ConfigError
from geolesf.methods.unet.mean_teacher import MeanTeacher, consistency_loss, ema_update, perturb, sigmoid_rampup
from geolesf.methods.unet.objectives import IGNORE, TrainState
from geolesf.methods.unet.sparse import SparseObjective, round_labels


def test_consistency_loss_by_hand():
    # pixel 0: softmax(0, 0) = (0.5, 0.5) vs teacher (1, 0): squared errors 0.25, 0.25 → 0.25 over classes;
    # pixel 1: softmax(ln 3, 0) = (0.75, 0.25) equals the teacher → 0
    logits = torch.tensor([[[[0.0, math.log(3.0)]], [[0.0, 0.0]]]])  # (1, 2, 1, 2)
    teacher = torch.tensor([[[[1.0, 0.75]], [[0.0, 0.25]]]])
    assert float(consistency_loss(logits, teacher)) == pytest.approx(0.125)
    assert float(consistency_loss(logits, teacher, torch.tensor([[[True, False]]]))) == pytest.approx(0.25)
    assert float(consistency_loss(logits, teacher, torch.tensor([[[False, True]]]))) == pytest.approx(0.0, abs=1e-7)
    assert float(consistency_loss(logits, teacher, torch.tensor([[[False, False]]]))) == 0.0
    logits.requires_grad_(True)
    teacher.requires_grad_(True)
    consistency_loss(logits, teacher).backward()
    assert teacher.grad is None and logits.grad.abs().sum() > 0  # the teacher's output is a constant target


def test_ema_update_by_hand():
    student, teacher = nn.Linear(1, 1), nn.Linear(1, 1)
    with torch.no_grad():
        student.weight.fill_(3.0), student.bias.fill_(2.0)
        teacher.weight.fill_(1.0), teacher.bias.fill_(0.0)
    # step 100: a = min(0.9, 1 − 1/101) = 0.9 → w = 0.9 · 1 + 0.1 · 3 = 1.2, b = 0.1 · 2 = 0.2
    assert ema_update(teacher, student, 0.9, 100) == pytest.approx(0.9)
    assert teacher.weight.item() == pytest.approx(1.2) and teacher.bias.item() == pytest.approx(0.2)
    # step 1: a = min(0.9, 1 − 1/2) = 0.5 → w = (1.2 + 3) / 2 = 2.1
    assert ema_update(teacher, student, 0.9, 1) == pytest.approx(0.5)
    assert teacher.weight.item() == pytest.approx(2.1) and teacher.bias.item() == pytest.approx(1.1)
    # step 0: a = 0, the teacher becomes the student
    ema_update(teacher, student, 0.9, 0)
    assert teacher.weight.item() == 3.0 and teacher.bias.item() == 2.0
    # buffers are the teacher's own (BatchNorm running averages untouched)
    s_bn, t_bn = nn.BatchNorm2d(1), nn.BatchNorm2d(1)
    s_bn.running_mean.fill_(5.0)
    ema_update(t_bn, s_bn, 0.5, 10)
    assert float(t_bn.running_mean) == 0.0


def test_sigmoid_rampup_and_perturb():
    assert sigmoid_rampup(0, 5) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(2.5, 5) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(5, 5) == 1.0 and sigmoid_rampup(9, 5) == 1.0 and sigmoid_rampup(0, 0) == 1.0
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(perturb(x, 0.0, 0.0), x)
    y = perturb(x, 0.0, 0.5)
    for b in range(2):
        for c in range(3):  # one affine map per chip and band: gain in [0.5, 1.5], offset in [-0.5, 0.5]
            a = torch.stack([x[b, c].ravel(), torch.ones(16)], 1)
            gain, offset = torch.linalg.lstsq(a, y[b, c].ravel()[:, None]).solution.ravel()
            assert torch.allclose(a @ torch.stack([gain, offset]), y[b, c].ravel(), atol=1e-5)
            assert 0.5 <= float(gain) <= 1.5 and -0.5 <= float(offset) <= 0.5
    assert float((perturb(x, 0.1, 0.0) - x).std()) == pytest.approx(0.1, rel=0.3)


def test_round_labels_take_confident_pixels_and_never_overrule_the_user():
    # five pixels, two classes; the user labelled pixel 3 as class 1 where the network says class 0 (p 0.95)
    probs = np.array([[0.95, 0.5, 0.2, 0.95, 0.1], [0.05, 0.5, 0.8, 0.05, 0.9]], dtype=np.float32)[:, None]
    target = np.array([[IGNORE, IGNORE, IGNORE, 1, IGNORE]])
    valid = np.ones((1, 5), dtype=bool)
    labels, stats = round_labels(probs, target, valid, 0.9)
    assert labels.tolist() == [[0, IGNORE, IGNORE, IGNORE, 1]]  # 0.8 < 0.9: left out; pixel 3 stays the user's
    assert stats["pseudo_share"] == pytest.approx(2 / 5) and stats["user_agreement"] == 0.0
    # class weights (1, 4): p ∝ p / w → pixel 4: (0.1, 0.225) / 0.325 → 0.69 < 0.9, no longer a label;
    # pixel 0: (0.95, 0.0125) → 0.987, still class 0
    labels, _ = round_labels(probs, target, valid, 0.9, np.array([1.0, 4.0]))
    assert labels.tolist() == [[0, IGNORE, IGNORE, IGNORE, IGNORE]]
    valid[0, 0] = False  # no image data: never a label
    assert round_labels(probs, target, valid, 0.9)[0].tolist() == [[IGNORE, IGNORE, IGNORE, IGNORE, 1]]


class _Fixed(nn.Module):
    """Logits (0, 10·x): class 1 where the band is > 0, class 0 where < 0, confident away from 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x[:, :1]), 10 * x[:, :1]], 1)


def test_a_round_replaces_the_extra_labels_and_weights_them_in_the_loss():
    image = np.array([[[-1.0, -0.01, 0.01, 1.0, 1.0, -1.0]]], dtype=np.float32)  # (1, 1, 6)
    target = np.array([[IGNORE, IGNORE, IGNORE, 0, IGNORE, IGNORE]])  # the user says 0 where the net says 1
    rasters = {"target": target, "valid": np.ones((1, 6), bool), "propagated": np.zeros((1, 6), np.int64)}
    obj = SparseObjective("points", prior_weight=0.0, rounds=1, round_weight=0.5)
    state = TrainState(_Fixed(), image, rasters, [0, 1], chip=1, epochs=2)
    obj.on_epoch_end(0, state)
    assert "pseudo" not in state.rasters
    obj.on_epoch_end(1, state)  # round_epochs(2, 1) == [1]
    assert state.rasters["pseudo"].tolist() == [[0, IGNORE, IGNORE, IGNORE, 1, 0]]
    assert "propagated" not in state.rasters and state.rasters["target"] is target
    assert obj.report()["rounds"] == [{"epoch": 1, "pseudo_share": 0.5, "user_agreement": 0.0}]
    logits = torch.tensor([[[[0.0, 0.0, 0.0, 0.0, 0.0, 0.0]], [[2.0, 0.0, 0.0, -1.0, 1.0, 0.0]]]])
    chips = {k: torch.from_numpy(v)[None] for k, v in state.rasters.items()}
    loss, stats = obj.loss(logits, torch.from_numpy(image)[None], chips)
    user = F.cross_entropy(logits[0, :, 0, 3:4].T, torch.tensor([0]))
    pseudo = F.cross_entropy(logits[0, :, 0, [0, 4, 5]].T, torch.tensor([0, 1, 0]))
    assert float(loss) == pytest.approx(float(user + 0.5 * pseudo), rel=1e-6)
    assert stats["pseudo_ce"] == pytest.approx(float(pseudo), rel=1e-6)


def test_mean_teacher_term_is_zero_for_an_identical_noiseless_teacher_and_the_teacher_is_saved():
    torch.manual_seed(0)
    student = nn.Conv2d(2, 3, 1)
    mt = MeanTeacher({"weight": 2.0, "noise": 0.0, "jitter": 0.0, "ramp_epochs": 0, "ema": 0.5})
    state = TrainState(student, np.zeros((2, 4, 4), np.float32), {}, [0, 1, 2], chip=4, epochs=3)
    mt.on_epoch_end(0, state)
    x = torch.randn(1, 2, 4, 4)
    term, stats = mt.term(student(x), x, None)
    assert float(term.detach()) == pytest.approx(0.0, abs=1e-12) and stats["ramp"] == 1.0
    with torch.no_grad():
        student.weight.add_(1.0)
    term, _ = mt.term(student(x), x, None)
    expected = ((student(x).softmax(1) - mt.teacher(x).softmax(1)) ** 2).mean()
    assert float(term) == pytest.approx(2.0 * float(expected), rel=1e-6) and float(term) > 0
    mt.after_step(student)  # step 0: a = 0 → teacher = student
    assert torch.equal(mt.teacher.weight, student.weight)
    mt.after_step(student)
    with torch.no_grad():
        student.weight.zero_()
    mt.on_epoch_end(3, state)  # the last epoch: the teacher's weights go into the trained model
    assert torch.equal(student.weight, mt.teacher.weight) and float(student.weight.abs().sum()) > 0
    kept = MeanTeacher({"save": "student"})  # save: student keeps the trained network's weights
    kept.on_epoch_end(0, state)
    with torch.no_grad():
        student.weight.fill_(7.0)
    kept.on_epoch_end(3, state)
    assert float(student.weight.detach().min()) == 7.0 and float(kept.teacher.weight.detach().max()) != 7.0
    for bad in ({"wieght": 1}, {"ema": 1.5}, [1], {"weight": "a lot"}, {"save": "both"}):
        with pytest.raises(ConfigError, match="mean_teacher"):
            MeanTeacher(bad)
