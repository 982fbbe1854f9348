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

This is the one-shot form of "spreading the labels over the image" that the pseudo-label-round literature
iterates; no rounds are run (the per-epoch hook could re-seed the walk from confident predictions).

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

from geolesf.data.supervision import partial_cross_entropy
from geolesf.errors import ConfigError
from geolesf.methods.unet.objectives import IGNORE, LabelRasters, Objective, check_args, sparse_class_raster

DEFAULTS = {"prior_weight": 0.01, "radius": 5.0, "sigma_xy": 6.0, "sigma_img": 0.5, "warmup": 0.5, "scale": 1,
            "propagate": 0.0, "propagate_beta": 10.0, "propagate_threshold": 0.7}


class SparseObjective(Objective):
    """Partial cross-entropy on the labelled pixels + ``prior_weight`` × the gated CRF loss."""

    needs_labels = False
    chips_at_labels = True

    def __init__(self, name: str, prior_weight: float = 0.01, radius: float = 5.0, sigma_xy: float = 6.0,
                 sigma_img: float = 0.5, warmup: float = 0.5, scale: int = 1, propagate: float = 0.0,
                 propagate_beta: float = 10.0, propagate_threshold: float = 0.7) -> None:
        if prior_weight < 0 or not 0 <= warmup < 1 or scale < 1 or propagate < 0:
            raise ConfigError(f"data.supervision_args: prior_weight and propagate must be ≥ 0, warmup in [0, 1) "
                              f"and scale ≥ 1, found {prior_weight}, {propagate}, {warmup}, {scale}")
        if propagate_beta <= 0 or not 0 < propagate_threshold <= 1:
            raise ConfigError(f"data.supervision_args: propagate_beta must be > 0 and propagate_threshold in (0, 1], "
                              f"found {propagate_beta}, {propagate_threshold}")
        self.name = name
        self.options = {"prior_weight": prior_weight, "radius": radius, "sigma_xy": sigma_xy,
                        "sigma_img": sigma_img, "warmup": warmup, "scale": scale, "propagate": propagate,
                        "propagate_beta": propagate_beta, "propagate_threshold": propagate_threshold}
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
        return {"type": self.name, "loss": "partial cross-entropy + propagate · CE(random-walk labels, Grady 2006) "
                "+ prior_weight · gated CRF (Obukhov et al. 2019)", "options": dict(self.options),
                "labelled_share": self.labelled_share, "propagated_share": self.propagated_share}


def sparse_objective(name: str, data: Any) -> SparseObjective:
    """Factory of ``points`` and ``scribbles`` (:data:`geolesf.methods.unet.objectives.SUPERVISION`)."""
    return SparseObjective(name, **check_args(name, getattr(data, "supervision_args", None), DEFAULTS))
