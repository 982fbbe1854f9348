"""Mean teacher (Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS 2017) for sparse labels.

``data.supervision_args.mean_teacher: {weight: 10, ema: 0.99, ramp_epochs: 5, noise: 0.1, jitter: 0.1}`` with
``data.supervision: points`` or ``scribbles`` (:mod:`geolesf.methods.unet.sparse`), or ``mask`` when the mask
leaves pixels unlabelled (its nodata / ``data.ignore_value``: the consistency then uses them, and chips without
any labelled pixel are trained on too). The *teacher* is a copy of the
network whose weights follow the student's as an exponential moving average after every optimiser step
(:func:`ema_update`, ``θ' ← α θ' + (1 − α) θ``); the student is trained with its usual loss plus a consistency
term on every pixel with image data — labelled or not, which is where the unlabelled part of the scene enters::

    L = partial CE(student(η(x)))  [+ the sparse objective's other terms]
        + w(t) · weight · mean over valid pixels and classes of (softmax student(η(x)) − softmax teacher(η'(x)))²

``η`` and ``η'`` are two independent draws of the input noise (:func:`perturb`): per chip and band a photometric
jitter (gain ``1 ± jitter``, offset ``± jitter`` on the z-scored bands, uniform) and gaussian noise of standard
deviation ``noise``. The consistency is the paper's mean squared error between the softmax outputs (its
implementation divides the squared error summed over classes by their number: the mean over classes), averaged
over the valid pixels of the batch (:func:`consistency_loss`); the teacher's output is a constant target (no
gradient). ``w(t) = exp(−5 (1 − t)²)``, ``t = epoch / ramp_epochs`` clipped to [0, 1], is the paper's
sigmoid-shaped ramp-up (:func:`sigmoid_rampup`), stepped per epoch. As in the paper's code, the decay is
``min(α, 1 − 1 / (step + 1))`` so that early on the teacher follows the student closely, and only the parameters
are averaged: the teacher runs in training mode (batch statistics) and keeps its own BatchNorm running
averages.

**What is saved** (``save``): the teacher by default (weights and its own BatchNorm running averages), which
replaces the student's after the last epoch. The paper reports the EMA model's predictions as at least as accurate
as the student's over training, and the teacher is the model the consistency targets came from. In our short CPU
runs it was not: on the benchmark's training halves (SpaceNet, Vaihingen; seeds 0–2; scored against their full
masks, never the test halves) the teacher's map was 0.002–0.04 mIoU below the student's in 11 of 12 runs — the
EMA lags the last ~100 steps of a cosine schedule that already ends at a zero learning rate. ``save: student``
keeps the student instead. Its BatchNorm statistics are *not*
re-estimated on uniform tiles of the scene (:mod:`geolesf.methods.unet.calibration`), as the sparse objective's
plain network is not either: the training chips sit around labelled pixels (class-balanced in the benchmark), and
statistics from uniform tiles differ from those the weights were trained with (same weights, SpaceNet seed 0:
re-estimation took the test mIoU from 0.38 to 0.28; a diagnostic of the machinery, not a tuning choice).

Deviations, documented: the paper trains image classifiers on CIFAR / SVHN / ImageNet with random translations and
flips plus input noise, for hundreds of epochs with ``α`` 0.99 → 0.999; here the input noise is photometric only
(no flips or shifts, which would need the outputs mapped back), the defaults suit short CPU runs (``α`` 0.99, an
averaging horizon of ~100 steps; a ramp over the first 5 epochs) and the labelled pixels are the user's points or
strokes, not whole labelled images. ``weight`` 10 lies in the middle of the range over which the paper found the
result insensitive to the consistency weight (MSE consistency); it was not tuned on our test regions.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

from geolesf.errors import ConfigError

DEFAULTS = {"weight": 10.0, "ema": 0.99, "ramp_epochs": 5.0, "noise": 0.1, "jitter": 0.1, "save": "teacher"}
"""``mean_teacher`` options (a mapping in ``data.supervision_args``)."""


def sigmoid_rampup(epoch: float, ramp_epochs: float) -> float:
    """The paper's ramp-up ``exp(−5 (1 − t)²)``, ``t = epoch / ramp_epochs`` clipped to [0, 1] (1 when no ramp)."""
    if ramp_epochs <= 0:
        return 1.0
    t = min(max(epoch / ramp_epochs, 0.0), 1.0)
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, alpha: float, step: int) -> float:
    """``θ' ← a θ' + (1 − a) θ`` over the parameters, ``a = min(alpha, 1 − 1 / (step + 1))``; returns ``a``.

    ``step`` counts the optimiser steps taken before this one (0 at the first update: ``a = 0``, the teacher
    becomes the student). Buffers (BatchNorm running averages) are left alone, as in the paper's code.
    """
    a = min(float(alpha), 1.0 - 1.0 / (step + 1))
    for t_param, s_param in zip(teacher.parameters(), student.parameters()):
        t_param.mul_(a).add_(s_param.detach(), alpha=1.0 - a)
    return a


def consistency_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor,
                     valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared difference of ``softmax(student_logits)`` and ``teacher_probs`` ``(B, K, H, W)``, averaged over
    the classes and the ``valid`` pixels ``(B, H, W)`` (all pixels when None); 0 when no pixel is valid."""
    sq = (student_logits.softmax(1) - teacher_probs.detach()).pow(2).mean(1)
    if valid is None:
        return sq.mean()
    v = valid.to(sq.dtype)
    return (sq * v).sum() / v.sum().clamp_min(1.0)


def perturb(x: torch.Tensor, noise: float, jitter: float) -> torch.Tensor:
    """One draw of the input noise on a batch of z-scored chips ``(B, C, H, W)``: per chip and band a gain
    ``U(1 − jitter, 1 + jitter)`` and an offset ``U(−jitter, jitter)``, then gaussian noise of std ``noise``
    (torch's global generator, seeded by the trainer)."""
    b, c = x.shape[:2]
    gain = 1.0 + jitter * (2 * torch.rand(b, c, 1, 1, device=x.device, dtype=x.dtype) - 1)
    offset = jitter * (2 * torch.rand(b, c, 1, 1, device=x.device, dtype=x.dtype) - 1)
    return x * gain + offset + noise * torch.randn_like(x)


class MeanTeacher:
    """The teacher, its EMA update, the student's input noise and the ramped consistency term of one run."""

    def __init__(self, options: dict[str, Any] | None) -> None:
        if not isinstance(options, dict):
            raise ConfigError(f"data.supervision_args.mean_teacher: expected a mapping such as {{weight: 10}}, "
                              f"found {options!r}")
        unknown = sorted(set(options) - set(DEFAULTS))
        if unknown:
            raise ConfigError(f"data.supervision_args.mean_teacher: unknown key(s) {', '.join(unknown)} "
                              f"(valid: {', '.join(sorted(DEFAULTS))})")
        try:
            o: dict[str, Any] = {k: float(options.get(k, v)) for k, v in DEFAULTS.items() if k != "save"}
        except (TypeError, ValueError):
            raise ConfigError(f"data.supervision_args.mean_teacher: numbers expected, found {options!r}") from None
        if o["weight"] < 0 or not 0 <= o["ema"] < 1 or o["ramp_epochs"] < 0 or o["noise"] < 0 or o["jitter"] < 0:
            raise ConfigError(f"data.supervision_args.mean_teacher: weight, ramp_epochs, noise and jitter must be "
                              f"≥ 0 and ema in [0, 1), found {o}")
        o["save"] = str(options.get("save", DEFAULTS["save"]))
        if o["save"] not in ("teacher", "student"):
            raise ConfigError(f"data.supervision_args.mean_teacher.save: 'teacher' or 'student', found {o['save']!r}")
        self.options = o
        self.teacher: torch.nn.Module | None = None
        self.steps = 0
        self.ramp = sigmoid_rampup(0, o["ramp_epochs"])
        """``w(t)`` of the current epoch."""

    def start(self, model: torch.nn.Module) -> None:
        """The teacher starts as a copy of the (initial) student."""
        self.teacher = copy.deepcopy(model)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.steps = 0

    def student_input(self, x: torch.Tensor) -> torch.Tensor:
        return perturb(x, self.options["noise"], self.options["jitter"])

    def term(self, student_logits: torch.Tensor, x: torch.Tensor,
             valid: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
        """``w(t) · weight · consistency`` between the student's logits and the teacher on a new noise of ``x``."""
        assert self.teacher is not None, "MeanTeacher.start() was not called"
        self.teacher.train()
        with torch.no_grad():
            target = self.teacher(self.student_input(x)).softmax(1)
        cons = consistency_loss(student_logits, target, valid)
        return self.ramp * self.options["weight"] * cons, {"consistency": float(cons.detach()), "ramp": self.ramp}

    def after_step(self, model: torch.nn.Module) -> None:
        if self.teacher is not None:
            ema_update(self.teacher, model, self.options["ema"], self.steps)
            self.steps += 1

    def on_epoch_end(self, epoch: int, state: Any) -> None:
        """Start the teacher (epoch 0), step the ramp, and after the last epoch put the teacher's weights and
        BatchNorm statistics into the trained model (what the checkpoint saves)."""
        if epoch == 0:
            self.start(state.model)
        self.ramp = sigmoid_rampup(epoch, self.options["ramp_epochs"])
        if epoch == state.epochs and self.teacher is not None and self.options["save"] == "teacher":
            state.model.load_state_dict(self.teacher.state_dict())


class TeacherHooks:
    """Objective mix-in: the trainer's hooks (:class:`~geolesf.methods.unet.objectives.Objective`) wired to
    ``self.teacher`` (a :class:`MeanTeacher`, or None = off)."""

    teacher: MeanTeacher | None = None

    def student_input(self, x: Any) -> Any:
        return x if self.teacher is None else self.teacher.student_input(x)

    def after_step(self, model: Any) -> None:
        if self.teacher is not None:
            self.teacher.after_step(model)

    def teacher_epoch_end(self, epoch: int, state: Any) -> None:
        """The teacher's end-of-epoch work (:meth:`MeanTeacher.on_epoch_end`); nothing when off."""
        if self.teacher is not None:
            self.teacher.on_epoch_end(epoch, state)

    def with_consistency(self, loss: Any, stats: dict[str, float], logits: Any, image: Any,
                         rasters: dict[str, Any]) -> tuple[Any, dict[str, float]]:
        """``loss`` plus the teacher's ramped consistency term (unchanged when off)."""
        if self.teacher is None:
            return loss, stats
        term, more = self.teacher.term(logits, image, rasters.get("valid"))
        return loss + term, {**stats, **more}

    def teacher_report(self) -> dict[str, Any]:
        if self.teacher is None or self.teacher.options["save"] == "student":
            return {"saved": "trained network"}
        return {"saved": "mean teacher (EMA weights)"}
