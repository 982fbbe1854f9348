"""``data.supervision: boxes`` — box-supervised training of ``unet`` in the manner of BoxInst.

Follows BoxInst (Tian, Shen, Wang & Chen, "BoxInst: High-Performance Instance Segmentation with Box
Annotations", CVPR 2021): the **projection loss** (dice between the max-projections of the predicted
mask on x and y and those of the box) plus the **pairwise loss** (neighbouring pixels at dilation 2 of
similar colour, ``S ≥ τ``, should share a label), both in :mod:`geolesf.losses.box`. Total loss on a
chip batch::

    L = CE(outside every box → background)  +  λ_proj · L_proj  +  w(t) · λ_pair · L_pair

Deviations, all forced by the semantic (not instance) setting or by geolesf's imagery:

* **semantic setting**: a box of class ``c`` constrains the class-``c`` probability map in its window
  (the box itself), and pixels outside every box are background — a cross-entropy term BoxInst does
  not need (its instance masks are cropped to the box). ``P(same label)`` sums over all classes;
* **colour**: Euclidean distance of z-scored bands (any band count) instead of CIE LAB, θ = 0.1 (in
  those units) instead of 2; τ = 0.3 as in BoxInst;
* **warm-up**: BoxInst ramps the pairwise weight up over its first 10k iterations; here ``w(t)``
  ramps linearly over the first ``warmup_steps`` optimiser steps (default 100);
* **BatchNorm**: after the last epoch the BatchNorm statistics are re-estimated on the scene with the
  final weights (:mod:`geolesf.methods.unet.calibration`; in both modes, so the baseline gets it too):
  the projection loss's large, sparse gradients otherwise leave the running averages behind;
* **crops**: training chips cut boxes; a box cut in x keeps only its x-projection, one cut in y only
  its y-projection (:func:`geolesf.losses.box.boxes_in_window`);
* **resolution**: BoxInst computes its losses on masks at stride 4 of the image; unet predicts at full
  resolution, so the projection term is computed on the ``stride × stride`` cell means of the probabilities
  (``stride``, default 4, :func:`geolesf.losses.box.pool_for_projection`); the pairwise term stays at full
  resolution. At stride 1 the max-projection is met by a one-pixel outline: on SpaceNet the network learnt an
  edge detector (building predicted along roof and shadow edges, 7 % of the in-box pixels against 64 % true;
  docs/weak_supervision.md).

``mode: recursive`` follows Khoreva et al. (CVPR 2017) instead: cross-entropy on box pseudo-masks re-estimated
in rounds, round 0 the box centres (Box^i) or the box centres spread by a random walk in each box
(:mod:`geolesf.methods.unet.box_rounds`, which lists its deviations); it measured best of the box modes
(docs/weak_supervision.md).

Two variants from the box-supervision literature are options, off by default: ``smooth_max`` (the
α-softmax instead of the hard max-projection, Hsu et al., NeurIPS 2019 — every pixel of a row gets a
gradient) and ``fill_rate`` (the filling-rate guided cross-entropy of Song et al., CVPR 2019 — the top-ρ
share of each box's pixels trained as its class).

The baseline ``mode: fill`` ("box interior = class") trains plain cross-entropy on the boxes filled
with their class (smaller boxes painted over larger ones, :func:`geolesf.data.supervision.boxes_to_pseudo_mask`).

Boxes arrive as a vector layer of box polygons (any CRS, the class in ``data.label_field``; read by
:func:`geolesf.data.supervision.boxes_from_vector`, each feature's bounding box) or as a raster through
the label reader (one box per connected component of each class, :func:`geolesf.data.weak_labels_box.boxes_from_mask`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from geolesf.errors import ConfigError, DataError
from geolesf.losses.box import (
    DEFAULT_TAU,
    DEFAULT_THETA,
    box_cover,
    boxes_in_window,
    colour_similarity,
    pairwise_loss,
    pixel_ranges,
    pool_for_projection,
    projection_loss,
)
from geolesf.methods.unet.box_rounds import (
    initial_target,
    prior_corrected,
    pseudo_target,
    random_walk_probabilities_in_boxes,
    round_epochs,
    scene_probabilities,
)
from geolesf.methods.unet.calibration import recalibrate_batchnorm
from geolesf.methods.unet.objectives import IGNORE, UNLABELLED, LabelRasters, Objective, check_args, class_lookup

DEFAULTS = {"mode": "boxinst", "lambda_proj": 1.0, "lambda_pair": 1.0, "theta": DEFAULT_THETA, "tau": DEFAULT_TAU,
            "dilation": 2, "warmup_steps": 100, "stride": 4, "smooth_max": 0.0, "fill_rate": 0.0,
            "inner": 0.2, "rounds": 2, "min_fill": 0.5, "confidence": 0.0, "start": 0.0, "init": "box_i", "beta": 10.0}
"""``data.supervision_args`` of ``boxes``: ``mode`` ``boxinst`` (projection + pairwise) or ``fill`` (the
"box interior = class" baseline); loss weights; colour scale θ and edge threshold τ; the pairwise
dilation; ``stride``, the cell size of the projection term (BoxInst's mask stride 4; 1 = full resolution);
``warmup_steps``, the optimiser steps over which the pairwise weight ramps from 0 to λ_pair;
``smooth_max`` α: 0 = the hard max-projection of BoxInst, α > 0 the α-softmax of Hsu et al. 2019;
``fill_rate`` ρ > 0 adds the filling-rate guided cross-entropy of Song et al. (CVPR 2019) on the top-ρ
pixels of each box. Both are off by default (BoxInst as published). ``mode: recursive`` (Khoreva et al. 2017,
:mod:`geolesf.methods.unet.box_rounds`): ``inner``, the share of each box's area (its centred inner rectangle)
labelled as the class in round 0, the rest of the box ignored; ``rounds`` pseudo-label rounds; ``min_fill``, a
box whose predicted class covers less of it is reset to its round-0 labels; ``confidence``, in-box pixels whose
top probability is lower are ignored; ``start``, the share of the epochs before the first round (0: rounds evenly
spread over the whole run); ``init`` ``box_i`` (round 0 = Box^i) or ``randomwalk`` (Box^i spread inside each box
by the random walk of Grady 2006, edge weight ``beta``)."""
MODES = ("boxinst", "fill", "recursive")


@dataclass
class SceneBoxes:
    """Boxes of a scene: inclusive pixel ranges ``(N, 4)`` ``[c0, r0, c1, r1]`` and their class ids ``(N,)``."""

    ranges: np.ndarray
    class_ids: np.ndarray
    pixel_boxes: np.ndarray
    """The boxes in pixel-edge coordinates ``[x0, y0, x1, y1]`` as read (clipped to the scene)."""


def read_scene_boxes(labels: str | Path, image: str | Path, *, label_field: str | None,
                     name_to_id: dict[str, int] | None, background: int) -> SceneBoxes:
    """Boxes from a vector layer (reprojected to the image CRS) or a label raster on the image grid."""
    import rasterio

    from geolesf.data.supervision import boxes_from_vector
    from geolesf.data.weak_labels_box import boxes_from_mask
    from geolesf.io.labels import is_vector

    with rasterio.open(image) as src:
        crs, transform, shape = src.crs, src.transform, (src.height, src.width)
    if is_vector(labels):
        boxes, classes = boxes_from_vector(labels, transform=transform, crs=crs, class_field=label_field or "class",
                                           class_ids=name_to_id)
    else:
        with rasterio.open(labels) as lab:
            mask, nodata = lab.read(1), lab.nodata
        if mask.shape != shape:
            raise DataError(f"{labels} is {mask.shape[1]}×{mask.shape[0]} px; {image} is {shape[1]}×{shape[0]}")
        got = boxes_from_mask(mask, seed=0, background=background, ignore=None if nodata is None else int(nodata))
        boxes, classes = got.boxes, got.classes
    h, w = shape
    inside = (boxes[:, 2] > 0) & (boxes[:, 3] > 0) & (boxes[:, 0] < w) & (boxes[:, 1] < h)
    if not inside.any():
        raise DataError(f"{labels}: no box overlaps {Path(image).name}")
    boxes, classes = np.clip(boxes[inside], 0, [w, h, w, h]), np.asarray(classes, dtype=np.int64)[inside]
    if (classes == background).any():
        raise DataError(f"{labels}: a box has the background class {background} (data.background); boxes mark objects")
    if (classes < 0).any() or (classes > 254).any():
        raise DataError(f"{labels}: box classes must be ids in 0..254")
    return SceneBoxes(ranges=pixel_ranges(boxes), class_ids=classes, pixel_boxes=boxes)


class BoxObjective(Objective):
    """``boxes``: BoxInst projection + pairwise losses (``mode: boxinst``), box-filled CE (``mode: fill``) or CE on
    recursive box pseudo-masks (``mode: recursive``, :mod:`geolesf.methods.unet.box_rounds`).

    In ``mode: recursive`` ``labels.tif`` is the round-0 pseudo-mask (255 = ignored) and the per-epoch hook
    replaces the training target at each round. Otherwise ``labels.tif`` is the boxes filled with their class
    (the "box interior = class" mask) in the other two modes: it fixes the class set and is what the baseline
    trains on; the BoxInst mode reads from it only the background outside the boxes, and gets the boxes
    themselves from the extra rasters
    ``row``/``col`` (each chip pixel's scene position, so a chip finds the boxes it cuts) and
    ``in_box``. The training-scene fit in ``metrics.json`` is therefore measured against the filled
    boxes; give ``data.eval_labels`` for the real masks.
    """

    name = "boxes"

    def __init__(self, background: int = 0, **options: Any) -> None:
        self.background = int(background)
        self.options = dict(DEFAULTS, **options)
        if self.options["init"] not in ("box_i", "randomwalk"):
            raise ConfigError("data.supervision_args.init: expected box_i or randomwalk, "
                              f"found '{self.options['init']}'")
        if self.options["mode"] not in MODES:
            raise ConfigError(f"data.supervision_args.mode: expected one of {', '.join(MODES)}, "
                              f"found '{self.options['mode']}'")
        self.scene: SceneBoxes | None = None
        self.channels: np.ndarray | None = None
        self.class_ids: list[int] = []
        self.steps = 0
        self.box_share: float | None = None
        self.calibrated_chips = 0
        self.initial: np.ndarray | None = None
        self.rounds: list[dict[str, float]] = []
        self.unprojected: int | None = None

    def read_labels(self, data: Any, out: Path) -> LabelRasters:
        import rasterio

        from geolesf.io.cog import write_cog

        scene = read_scene_boxes(data.labels, data.image, label_field=data.label_field,
                                 name_to_id=class_lookup(data.class_names), background=self.background)
        with rasterio.open(data.image) as src:
            crs, transform, shape = src.crs, src.transform, (src.height, src.width)
        filled = fill_mask(scene, shape, self.background)
        self.class_ids = sorted(int(k) for k in data.class_names) if data.class_names else \
            sorted(int(v) for v in np.unique(filled))
        missing = sorted(set(int(c) for c in scene.class_ids) - set(self.class_ids))
        if missing:
            raise DataError(f"{data.labels}: box classes {missing} are not in data.class_names")
        self.scene = scene
        self.channels = np.searchsorted(self.class_ids, scene.class_ids)
        if self.options["mode"] == "recursive":  # round 0 of Simple Does It: box centres, the rest of the box ignored
            if self.background not in self.class_ids:
                raise DataError(f"boxes: the background class {self.background} is not in data.class_names")
            start = initial_target(scene.ranges, self.channels, shape, self.class_ids.index(self.background),
                                   self.options["inner"])
            if self.options["init"] == "randomwalk":
                start = self._random_walk_start(data.image, start)
            lut = np.asarray(self.class_ids, dtype=np.uint8)
            filled = np.where(start == IGNORE, UNLABELLED, lut[np.maximum(start, 0)]).astype(np.uint8)
        path = Path(write_cog(out / "labels.tif", filled, crs=crs, transform=transform, nodata=UNLABELLED,
                              resampling="nearest"))
        cover = box_cover(scene.ranges, shape)
        self.box_share = float(cover.mean())
        print(f"read {len(scene.class_ids)} boxes of {Path(str(data.labels)).name} "
              f"({100 * self.box_share:.1f} % of the scene inside a box) → {path}")
        extra = {}
        if self.options["mode"] == "boxinst":
            rows, cols = np.indices(shape, dtype=np.int32)
            extra = {"row": rows, "col": cols, "in_box": cover}
        return LabelRasters(path, dict(data.class_names or {}), extra=extra,
                            report={"labels": str(data.labels), "boxes": int(len(scene.class_ids))})

    def loss(self, logits: Any, image: Any, rasters: dict[str, Any]) -> tuple[Any, dict[str, float]]:
        target = rasters["target"]
        o = self.options
        self.steps += 1
        if o["mode"] in ("fill", "recursive"):  # class weights: the trainer's trainer.class_weights, if it sets them
            ce = F.cross_entropy(logits, target, weight=getattr(self, "class_weights", None), ignore_index=IGNORE)
            return ce, {"ce": float(ce.detach())}
        in_box = rasters["in_box"].bool()
        size = target.shape[-1]
        rows = [chip_box_rows(self.scene, self.channels, int(rasters["row"][b, 0, 0]), int(rasters["col"][b, 0, 0]),
                              size) for b in range(len(target))]
        outside = torch.where(in_box, torch.full_like(target, IGNORE), target)
        ramp = min(1.0, self.steps / o["warmup_steps"]) if o["warmup_steps"] > 0 else 1.0
        return boxinst_loss(logits, image, outside, rows, in_box & rasters["valid"].bool(), o, ramp)

    def on_epoch_end(self, epoch: int, state: Any) -> None:
        if list(state.class_ids) != self.class_ids:
            raise DataError(f"boxes: the trainer's classes {state.class_ids} differ from the boxes' {self.class_ids}")
        if self.options["mode"] == "recursive":
            self._pseudo_round(epoch, state)
        if epoch == 0 and self.options["mode"] == "boxinst":
            self._check_box_sizes(int(state.chip))
        if epoch == getattr(state, "epochs", -1):  # after the last epoch (every mode, so the baseline gets it too)
            self.calibrated_chips = recalibrate_batchnorm(state.model, state.image, state.chip, device=state.device)

    def _check_box_sizes(self, chip: int) -> None:
        """Warn about boxes wider and taller than the training chip: every chip cuts them in x and in y, so
        neither projection ever applies to them (only the pairwise term sees their inside)."""
        r = self.scene.ranges
        self.unprojected = int(((r[:, 2] - r[:, 0] + 1 > chip) & (r[:, 3] - r[:, 1] + 1 > chip)).sum())
        if self.unprojected:
            print(f"warning: {self.unprojected} of {len(r)} boxes are wider and taller than the {chip}-px training "
                  "chip: the projection loss never sees them (raise trainer.chip, or use mode: recursive)")

    def _random_walk_start(self, image: Any, seeds: np.ndarray) -> np.ndarray:
        """Round 0 from the image: the Box^i labels spread inside each box by the random walk (z-scored bands)."""
        import rasterio

        with rasterio.open(image) as src:
            bands, valid = src.read().astype(np.float32), src.dataset_mask() > 0
        pix = bands[:, valid]
        z = (bands - pix.mean(1)[:, None, None]) / (pix.std(1)[:, None, None] + 1e-6)
        probs = random_walk_probabilities_in_boxes(z, np.where(valid, seeds, IGNORE), self.scene.ranges,
                                                   len(self.class_ids), beta=self.options["beta"], valid=valid)
        target, stats = pseudo_target(probs, self.scene.ranges, self.channels, seeds,
                                      self.class_ids.index(self.background), min_fill=self.options["min_fill"],
                                      confidence=max(0.5, self.options["confidence"]))
        self.rounds.append({"epoch": 0, "init": "randomwalk", **stats})
        return np.where(valid, target, IGNORE)

    def _pseudo_round(self, epoch: int, state: Any) -> None:
        """Recursive mode: keep the round-0 target (epoch 0); at the round epochs, predictions → the new target."""
        if epoch == 0:
            self.initial = state.rasters["target"].copy()
            return
        if epoch not in round_epochs(getattr(state, "epochs", 0), int(self.options["rounds"]), self.options["start"]):
            return
        recalibrate_batchnorm(state.model, state.image, state.chip, device=state.device)
        probs = scene_probabilities(state.model, state.image, device=state.device)
        weight = getattr(self, "class_weights", None)
        if weight is not None:  # a class-weighted network's posteriors ∝ w_c · p(c|x): undo the weights' prior shift
            probs = prior_corrected(probs, weight.detach().cpu().numpy())
        target, stats = pseudo_target(probs, self.scene.ranges, self.channels, self.initial,
                                      self.class_ids.index(self.background), min_fill=self.options["min_fill"],
                                      confidence=self.options["confidence"])
        target = np.where(state.rasters["valid"], target, IGNORE)
        self._reweight(state.rasters["target"], target)
        state.rasters["target"] = target
        self.rounds.append({"epoch": epoch, **stats})

    def _reweight(self, old: np.ndarray, new: np.ndarray) -> None:
        """Trainer class weights (``trainer.class_weights``) follow the pseudo-labels: each class's weight is
        scaled by its old / new pixel count (inverse frequency), then all so a labelled pixel weighs 1 on average."""
        weight = getattr(self, "class_weights", None)
        if weight is None:
            return
        k = len(weight)
        n_old = np.bincount(old[old != IGNORE].ravel(), minlength=k)[:k].astype(np.float64)
        n_new = np.bincount(new[new != IGNORE].ravel(), minlength=k)[:k].astype(np.float64)
        w = weight.detach().cpu().double().numpy() * np.where(n_new > 0, np.maximum(n_old, 1) / np.maximum(n_new, 1), 1)
        w *= n_new.sum() / max(float((n_new * w).sum()), 1e-12)
        self.class_weights = torch.as_tensor(w, dtype=weight.dtype, device=weight.device)

    def report(self) -> dict[str, Any]:
        loss = {"boxinst": "CE outside boxes + λ_proj · projection + λ_pair · pairwise (BoxInst, Tian et al. 2021)",
                "fill": "CE on the boxes filled with their class (box interior = class)",
                "recursive": "CE on box pseudo-masks re-estimated in rounds (Simple Does It, Khoreva et al. 2017)",
                }[self.options["mode"]]
        extra = {"rounds": self.rounds} if self.options["mode"] == "recursive" else {}
        return {"type": self.name, "loss": loss, "options": dict(self.options), "box_share": self.box_share, **extra,
                "boxes": None if self.scene is None else int(len(self.scene.class_ids)),
                "batchnorm_recalibrated_on_chips": self.calibrated_chips, "boxes_larger_than_chip": self.unprojected}


def fill_mask(scene: SceneBoxes, shape: tuple[int, int], background: int) -> np.ndarray:
    """The "box interior = class" pseudo mask: background outside, each box's class inside (smaller on top)."""
    from geolesf.data.supervision import boxes_to_pseudo_mask

    return boxes_to_pseudo_mask(scene.pixel_boxes, scene.class_ids, shape, fill="box", background=background)


def chip_box_rows(scene: SceneBoxes, channels: np.ndarray, row: int, col: int, size: int) -> torch.Tensor:
    """The scene boxes as :func:`~geolesf.losses.box.projection_loss` rows of the chip at ``(row, col)``."""
    return torch.from_numpy(boxes_in_window(scene.ranges, channels, row, col, size, size))


def boxinst_loss(logits: torch.Tensor, image: torch.Tensor, outside: torch.Tensor, rows: list[torch.Tensor],
                 pair_mask: torch.Tensor, opts: dict[str, Any], ramp: float) -> tuple[torch.Tensor, dict[str, float]]:
    """The BoxInst objective on a chip batch.

    ``logits`` ``(B, K, H, W)``; ``image`` ``(B, C, H, W)`` (z-scored bands); ``outside`` ``(B, H, W)``
    background index outside the boxes, :data:`IGNORE` inside; ``rows[b]`` the chip's box rows;
    ``pair_mask`` the centre pixels of the pairwise edges (inside a box, image data present);
    ``ramp`` the pairwise warm-up factor in [0, 1].
    """
    log_p = F.log_softmax(logits, 1)
    ce = F.nll_loss(log_p, outside, ignore_index=IGNORE) if (outside != IGNORE).any() else logits.sum() * 0.0
    probs = log_p.exp()
    stride, alpha = int(opts["stride"]), float(opts["smooth_max"])
    per_box = torch.cat([projection_loss(*pool_for_projection(probs[b], rows[b].to(logits.device), stride),
                                         reduction="none", alpha=alpha) for b in range(len(rows))])
    proj = per_box.mean() if len(per_box) else logits.sum() * 0.0  # the mean over the batch's boxes
    sim = colour_similarity(image, dilation=int(opts["dilation"]), theta=opts["theta"])
    pair = pairwise_loss(log_p, sim, pair_mask, dilation=int(opts["dilation"]), tau=opts["tau"])
    loss = ce + opts["lambda_proj"] * proj + ramp * opts["lambda_pair"] * pair
    stats = {"ce_outside": float(ce.detach()), "projection": float(proj.detach()),
             "pairwise": float(pair.detach()), "pairwise_weight": ramp * opts["lambda_pair"]}
    if opts["fill_rate"] > 0:
        rate = filling_rate_loss(log_p, rows, opts["fill_rate"], n=max(int((pair_mask | (outside != IGNORE)).sum()), 1))
        loss = loss + rate
        stats["fill_rate_ce"] = float(rate.detach())
    return loss, stats


def filling_rate_loss(log_p: torch.Tensor, rows: list[torch.Tensor], rate: float, n: int) -> torch.Tensor:
    """Filling-rate guided cross-entropy (Song et al., CVPR 2019): in each box the ``rate`` share of its
    pixels most likely of the box's class (by the current, detached prediction) are trained as that class;
    the rest of the box is left to the other terms. Summed over pixels and divided by ``n`` (the chip
    batch's pixels with a target), so it weighs per pixel as the box-fill baseline's cross-entropy does."""
    total = log_p.sum() * 0.0
    for b, boxes in enumerate(rows):
        for k, c0, r0, c1, r1, _, _ in boxes.long().tolist():
            window = log_p[b, k, r0:r1 + 1, c0:c1 + 1].flatten()
            top = max(1, int(round(rate * window.numel())))
            chosen = torch.topk(window.detach(), top).indices
            total = total - window[chosen].sum()
    return total / n


def box_objective(name: str, data: Any) -> BoxObjective:
    """Factory of ``boxes`` (:data:`geolesf.methods.unet.objectives.SUPERVISION`)."""
    return BoxObjective(background=getattr(data, "background", 0),
                        **check_args(name, getattr(data, "supervision_args", None), DEFAULTS))
