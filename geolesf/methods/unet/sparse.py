"""Points and scribbles → a dense map: partial cross-entropy, random-walk labels and the gated CRF prior.

``data.supervision: points`` or ``scribbles``. The labels are a vector layer of points or lines
(any CRS, the class in ``data.label_field``) burnt onto the image grid by the shared label reader
— a point labels the one pixel that holds it, a line the 1-px stroke it crosses — or a sparse label
raster (unlabelled = ``data.ignore_value``, its nodata, or 255). Every other pixel is unlabelled.

The loss on a chip batch (Obukhov et al. 2019, "Gated CRF Loss for Weakly Supervised Semantic
Image Segmentation"; :mod:`geolesf.losses.gated_crf`)::

    L = partial CE(labelled pixels) + prior_weight · L_gCRF(softmax(logits), image, valid)

The partial cross-entropy is the mean over labelled pixels of the batch (0 when a batch has none);
the prior acts on every pixel with image data. Each training chip is placed around a random labelled
pixel (at a random position inside the chip), so that with a fraction of a percent of the pixels
labelled every batch still carries labels — uniform chips would mostly see none.
``prior_weight: 0`` gives the partial-CE-alone baseline.

**Random-walk labels** (``propagate`` > 0, default 0 = off; Grady 2006, :mod:`geolesf.data.propagation`): before
the first epoch the labelled pixels seed a random walk on the (z-scored) scene; pixels the walk assigns to a class
with probability ≥ ``propagate_threshold`` (0.7; edge sharpness ``propagate_beta`` 10) become a second label raster
``rasters["propagated"]`` (the seeds themselves excluded), and the loss gains ``propagate`` × its cross-entropy::

    L = partial CE + propagate · CE(random-walk labels) + prior_weight · L_gCRF

This is the one-shot form of "spreading the labels over the image"; the rounds below iterate it from the
network's own predictions.

**Pseudo-label rounds** (``rounds`` > 0, default 0 = off; self-training with pseudo-labels, Lee 2013, "Pseudo-Label:
the simple and efficient semi-supervised learning method for deep neural networks"): after the epochs
:func:`~geolesf.methods.unet.box_rounds.round_epochs` picks (``rounds`` of them evenly spread over the run, never
after the last) the network predicts the whole training scene in evaluation mode, as the checkpoint will (with
``trainer.class_weights`` the probabilities corrected back to the unweighted posterior:
:func:`~geolesf.methods.unet.box_rounds.prior_corrected`, and the scene tiled by
:func:`~geolesf.methods.unet.box_rounds.scene_probabilities` — the machinery of the box rounds; unlike the box
rounds, the BatchNorm statistics are not re-estimated on uniform tiles, see :mod:`~geolesf.methods.unet.mean_teacher`). Pixels whose top
corrected probability reaches ``round_threshold`` (0.9) become the labels ``rasters["pseudo"]`` of the next epochs
(:func:`round_labels`), weighted ``round_weight`` (0.5, like the propagated labels)::

    L = partial CE + round_weight · CE(round labels) + prior_weight · L_gCRF

The user's own labels always win: their pixels are never pseudo-labelled (they stay in the partial CE at weight
1), whatever the network predicts there. A round's labels replace the previous round's and the random-walk labels
(the network trained on the walk; its confident prediction is the re-estimate). Deviations from Lee 2013: the paper
re-labels every unlabelled sample with the argmax at every weight update under a ramped weight; here labels are
re-estimated in a few rounds, only confident pixels are kept (the threshold of later confidence-thresholded
self-training) and the weight is constant. With ``mean_teacher`` on, the teacher predicts the rounds.

**Mean teacher** (``mean_teacher: {weight, ema, ramp_epochs, noise, jitter}``, default off; Tarvainen & Valpola
2017, :mod:`geolesf.methods.unet.mean_teacher`): an EMA copy of the network as teacher, the student trained on a
noisy chip with a ramped consistency term against the teacher's prediction of another noise of it, on every valid
pixel; the teacher's weights are what is saved.

Options (``data.supervision_args``): ``prior_weight`` (default 0.01), ``radius`` (5 px), ``sigma_xy``
(6 px), ``sigma_img`` (0.5 band standard deviations) — the kernel of the reference implementation's
example setting (one bilateral kernel with σ_xy 6 and σ_rgb 0.1 on [0, 1] RGB, radius 5, recalled),
with σ_img restated for z-scored bands; its loss weight 0.1 made our randomly initialised unet collapse
towards a constant map in short CPU trainings, so the default is 0.01 (benchmarks/bench_weak_labels.py) — ``warmup`` (0.5) and ``scale`` (1): the prior on
predictions and image average-pooled by ``scale`` (the paper computes it on down-scaled predictions;
``radius`` and ``sigma_xy`` are then in down-scaled pixels, so the prior reaches ``scale`` × farther).

Deviation, documented: the paper trains from an ImageNet-initialised backbone with the prior on from
the start; our unet starts from random weights, and the prior alone is minimised by a constant map,
so the first ``warmup`` fraction of the epochs uses the partial cross-entropy alone (the per-epoch
hook switches the prior on), the schedule of the regularised-loss papers that fine-tune a
partial-CE model with the regulariser (Tang et al., ECCV 2018).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from geolesf.data.supervision import partial_cross_entropy
from geolesf.errors import ConfigError
from geolesf.methods.unet.box_rounds import prior_corrected, round_epochs, scene_probabilities
from geolesf.methods.unet.mean_teacher import MeanTeacher, TeacherHooks
from geolesf.methods.unet.objectives import IGNORE, LabelRasters, Objective, check_args, sparse_class_raster

DEFAULTS = {"prior_weight": 0.01, "radius": 5.0, "sigma_xy": 6.0, "sigma_img": 0.5, "warmup": 0.5, "scale": 1,
            "propagate": 0.0, "propagate_beta": 10.0, "propagate_threshold": 0.7, "rounds": 0,
            "round_threshold": 0.9, "round_weight": 0.5, "mean_teacher": None}


class SparseObjective(TeacherHooks, Objective):
    """Partial cross-entropy on the labelled pixels + ``prior_weight`` × the gated CRF loss."""

    needs_labels = False
    chips_at_labels = True

    def __init__(self, name: str, prior_weight: float = 0.01, radius: float = 5.0, sigma_xy: float = 6.0,
                 sigma_img: float = 0.5, warmup: float = 0.5, scale: int = 1, propagate: float = 0.0,
                 propagate_beta: float = 10.0, propagate_threshold: float = 0.7, rounds: int = 0,
                 round_threshold: float = 0.9, round_weight: float = 0.5,
                 mean_teacher: dict[str, Any] | None = None) -> None:
        if prior_weight < 0 or not 0 <= warmup < 1 or scale < 1 or propagate < 0:
            raise ConfigError(f"data.supervision_args: prior_weight and propagate must be ≥ 0, warmup in [0, 1) "
                              f"and scale ≥ 1, found {prior_weight}, {propagate}, {warmup}, {scale}")
        if propagate_beta <= 0 or not 0 < propagate_threshold <= 1:
            raise ConfigError(f"data.supervision_args: propagate_beta must be > 0 and propagate_threshold in (0, 1], "
                              f"found {propagate_beta}, {propagate_threshold}")
        if rounds < 0 or not 0 < round_threshold <= 1 or round_weight < 0:
            raise ConfigError(f"data.supervision_args: rounds and round_weight must be ≥ 0 and round_threshold in "
                              f"(0, 1], found {rounds}, {round_weight}, {round_threshold}")
        self.teacher = None if mean_teacher is None else MeanTeacher(mean_teacher)
        self.rounds: list[dict[str, float]] = []
        self.name = name
        self.options = {"prior_weight": prior_weight, "radius": radius, "sigma_xy": sigma_xy,
                        "sigma_img": sigma_img, "warmup": warmup, "scale": scale, "propagate": propagate,
                        "propagate_beta": propagate_beta, "propagate_threshold": propagate_threshold,
                        "rounds": rounds, "round_threshold": round_threshold, "round_weight": round_weight,
                        "mean_teacher": None if self.teacher is None else dict(self.teacher.options)}
        self.propagated_share: float | None = None
        self.weight = prior_weight
        """The prior's weight in the current epoch (0 during the warm-up)."""
        self.labelled_share: float | None = None

    def read_labels(self, data: Any, out: Path) -> LabelRasters:
        return sparse_class_raster(data, out, what=self.name)

    def loss(self, logits: Any, image: Any, rasters: dict[str, Any]) -> tuple[Any, dict[str, float]]:
        from torch.nn import functional as F

        from geolesf.losses.gated_crf import gated_crf_loss

        ce = partial_cross_entropy(logits, rasters["target"], ignore_index=IGNORE, weight=self.class_weights)
        o = self.options
        stats = {"partial_ce": float(ce.detach())}
        if o["propagate"] > 0 and "propagated" in rasters:
            extra = partial_cross_entropy(logits, rasters["propagated"], ignore_index=IGNORE, weight=self.class_weights)
            ce = ce + o["propagate"] * extra
            stats["propagated_ce"] = float(extra.detach())
        if "pseudo" in rasters:
            extra = partial_cross_entropy(logits, rasters["pseudo"], ignore_index=IGNORE, weight=self.class_weights)
            ce = ce + o["round_weight"] * extra
            stats["pseudo_ce"] = float(extra.detach())
        ce, stats = self.with_consistency(ce, stats, logits, image, rasters)
        if self.weight == 0:
            return ce, {**stats, "prior_weight": 0.0}
        probs, valid = logits.softmax(1), rasters.get("valid")
        if o["scale"] > 1:  # the paper's down-scaled predictions: radius and σ_xy in down-scaled pixels
            probs, image = F.avg_pool2d(probs, o["scale"]), F.avg_pool2d(image, o["scale"])
            valid = None if valid is None else -F.max_pool2d(-valid[:, None].float(), o["scale"])[:, 0] > 0
        prior = gated_crf_loss(probs, image, valid, radius=o["radius"], sigma_xy=o["sigma_xy"],
                               sigma_img=o["sigma_img"])
        return ce + self.weight * prior, {**stats, "gated_crf": float(prior.detach()), "prior_weight": self.weight}

    def on_epoch_end(self, epoch: int, state: Any) -> None:
        """Warm-up schedule: partial cross-entropy alone for the first ``warmup`` of the epochs, then the prior."""
        self.weight = self.options["prior_weight"] if epoch >= self.options["warmup"] * state.epochs else 0.0
        if self.labelled_share is None:
            t, v = state.rasters["target"], state.rasters["valid"]
            self.labelled_share = float((t != IGNORE).sum() / max(int(v.sum()), 1))
        if epoch == 0 and self.options["propagate"] > 0:
            self._propagate(state)
        self.teacher_epoch_end(epoch, state)
        if epoch in round_epochs(state.epochs, self.options["rounds"]):
            self._round(epoch, state)

    def _round(self, epoch: int, state: Any) -> None:
        """One pseudo-label round: the (teacher or) network's confident predictions → ``rasters["pseudo"]``."""
        model = state.model if self.teacher is None else self.teacher.teacher
        probs = scene_probabilities(model, state.image, device=state.device)
        weights = None if self.class_weights is None else self.class_weights.detach().cpu().numpy()
        labels, stats = round_labels(probs, state.rasters["target"], state.rasters["valid"],
                                     self.options["round_threshold"], weights)
        state.rasters["pseudo"] = labels
        state.rasters.pop("propagated", None)  # superseded by the round's labels
        self.rounds.append({"epoch": epoch, **stats})
        print(f"pseudo-label round after epoch {epoch}: {100 * stats['pseudo_share']:.1f} % of the pixels labelled "
              f"(user labels agreed with: {100 * stats['user_agreement']:.1f} %)")

    def _propagate(self, state: Any) -> None:
        """The random walk from the labelled pixels (Grady 2006): its confident pixels → ``rasters["propagated"]``."""
        import time

        from geolesf.data.propagation import propagate_labels

        start = time.perf_counter()
        t, v = state.rasters["target"], state.rasters["valid"]
        spread = propagate_labels(state.image, t, len(state.class_ids), beta=self.options["propagate_beta"],
                                  threshold=self.options["propagate_threshold"], valid=v)
        spread[t != IGNORE] = IGNORE  # the labelled pixels count once, in the partial cross-entropy
        state.rasters["propagated"] = spread
        self.propagated_share = float((spread != IGNORE).sum() / max(int(v.sum()), 1))
        print(f"random walk: {100 * self.propagated_share:.1f} % of the pixels labelled from "
              f"{100 * self.labelled_share:.3f} % in {time.perf_counter() - start:.1f} s")

    def report(self) -> dict[str, Any]:
        loss = ("partial cross-entropy + propagate · CE(random-walk labels, Grady 2006) + prior_weight · gated CRF "
                "(Obukhov et al. 2019)" + (" + round_weight · CE(pseudo-label rounds, Lee 2013)" if self.options["rounds"]
                                           else "")
                + (" + ramped consistency with a mean teacher (Tarvainen & Valpola 2017)" if self.teacher else ""))
        return {"type": self.name, "loss": loss, "options": dict(self.options),
                "labelled_share": self.labelled_share, "propagated_share": self.propagated_share,
                "rounds": self.rounds, **self.teacher_report()}


def round_labels(probs: np.ndarray, target: np.ndarray, valid: np.ndarray, threshold: float,
                 class_weights: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, float]]:
    """One round's pseudo-labels from the scene's probabilities ``probs`` ``(K, H, W)``.

    With ``class_weights`` the probabilities are first corrected to the unweighted posterior
    (:func:`~geolesf.methods.unet.box_rounds.prior_corrected`). A pixel gets the argmax class when its top
    probability is ≥ ``threshold``, it has image data (``valid``) and the user did not label it (``target`` is
    :data:`IGNORE` there): user labels are never overruled. Returns ``(labels (H, W) int64, IGNORE elsewhere,
    stats)``: ``pseudo_share`` (labelled pixels / valid pixels) and ``user_agreement`` (share of the user's
    labels the argmax agrees with, a diagnostic).
    """
    if class_weights is not None:
        probs = prior_corrected(probs, class_weights)
    best, top = probs.argmax(0), probs.max(0)
    user = target != IGNORE
    labels = np.where((top >= threshold) & valid & ~user, best, IGNORE).astype(np.int64)
    agree = float((best[user] == target[user]).mean()) if user.any() else 0.0
    return labels, {"pseudo_share": float((labels != IGNORE).sum() / max(int(valid.sum()), 1)),
                    "user_agreement": agree}


def sparse_objective(name: str, data: Any) -> SparseObjective:
    """Factory of ``points`` and ``scribbles`` (:data:`geolesf.methods.unet.objectives.SUPERVISION`)."""
    return SparseObjective(name, **check_args(name, getattr(data, "supervision_args", None), DEFAULTS))
