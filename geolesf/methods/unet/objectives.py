"""Supervision objectives of the segmentation task: one :class:`Objective` per ``data.supervision`` value.

The segmentation trainer (:mod:`geolesf.methods.unet.train`) knows nothing about label types; an
objective supplies the three things that differ between full masks, points, scribbles, boxes and
noisy masks:

1. **labels → rasters** — :meth:`Objective.read_labels` reads ``data.labels`` (a vector layer in any
   CRS through :func:`geolesf.io.labels.burn_vector_labels`, or a raster on the image grid) and writes
   the class raster ``labels.tif`` into the run folder (original class ids, 255 = unlabelled, its
   nodata); it may add named *extra rasters* on the same grid (e.g. a box id per pixel);
2. **the loss on a chip batch** — :meth:`Objective.loss` ``(logits, image_chip, rasters_chip) ->
   (loss, stats)``. ``rasters_chip`` maps names to ``(B, c, c)`` tensors of the same chips:
   ``"target"`` (class *index* 0..K-1, :data:`IGNORE` where unlabelled), ``"valid"`` (bool, image
   data present) and every extra raster. ``stats`` are floats averaged per epoch into the history.
   Chips are drawn uniformly, or (``chips_at_labels``) each around a random labelled pixel;
3. **an optional per-epoch hook** — :meth:`Objective.on_epoch_end` ``(epoch, state)`` may rewrite
   ``state.rasters`` (e.g. pseudo-label rounds: confident predictions become labels);

and :meth:`Objective.report` (a dict) goes into ``metrics.json["supervision"]``.

**Dispatch**: :data:`SUPERVISION` maps a ``data.supervision`` name to ``"module:factory"``; the
factory is called as ``factory(name, data_cfg)`` and returns an objective. A new label type plugs in
by adding one module with a factory and one line here. Factories read their options from
``data.supervision_args`` (a mapping; unknown keys are a :class:`~geolesf.errors.ConfigError`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.errors import ConfigError, DataError
from geolesf.io.labels import CONFLICT, UNBURNT, VECTOR_SUFFIXES, burn_to_raster, burn_vector_labels, grid_of
from geolesf.methods.unet.mean_teacher import MeanTeacher, TeacherHooks

IGNORE = -100
"""Target value of unlabelled pixels in ``rasters_chip["target"]`` (``F.cross_entropy``'s ignore index)."""
UNLABELLED = 255
"""Value of unlabelled pixels in the class raster ``labels.tif`` (its nodata)."""

SUPERVISION = {
    "mask": "geolesf.methods.unet.objectives:mask_objective",
    "points": "geolesf.methods.unet.sparse:sparse_objective",
    "scribbles": "geolesf.methods.unet.sparse:sparse_objective",
    "boxes": "geolesf.methods.unet.boxes:box_objective",
    "noisy": "geolesf.methods.unet.noisy:noisy_objective",
}
"""``data.supervision`` name → ``"module:factory"`` (``factory(name, data_cfg) -> Objective``)."""


@dataclass
class LabelRasters:
    """What :meth:`Objective.read_labels` returns: the class raster and the extra rasters."""

    labels: Path
    """Class raster on the image grid (original class ids; ``ignore_value`` or its nodata = unlabelled)."""
    class_names: dict[int, str] = field(default_factory=dict)
    """Class id → name (the config's ``data.class_names`` merged with the names a vector field gave)."""
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    """Named ``(H, W)`` rasters on the image grid, cropped into the same chips as the target."""
    ignore_value: int | None = None
    """Label value of unlabelled pixels (``None``: the raster's nodata)."""
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainState:
    """What the per-epoch hook sees: the model, the normalised scene and the full-scene rasters."""

    model: Any
    image: np.ndarray
    """``(bands, H, W)`` float32 normalised image (0 where the image has no data)."""
    rasters: dict[str, np.ndarray]
    """``"target"`` (class index, :data:`IGNORE`), ``"valid"`` and the extra rasters; the hook may replace them."""
    class_ids: list[int]
    device: str = "cpu"
    chip: int = 128
    epochs: int = 1
    """The run's number of epochs (for schedules in the hook)."""
    chip_sampling: str = "uniform"
    """``trainer.chip_sampling``: ``balanced`` = each chip around a pixel of a uniformly drawn labelled class."""


class Objective:
    """Base objective; subclasses override :meth:`read_labels` and :meth:`loss` (the hook is optional)."""

    name = "objective"
    needs_labels = True
    """Whether chip batches without any labelled pixel are skipped (False when a prior acts on every pixel)."""
    chips_at_labels = False
    """Whether every training chip is placed to hold a labelled pixel (sparse labels), instead of uniformly."""
    class_weights: Any = None
    """``(K,)`` cross-entropy class weights (a tensor) or None; set by the trainer from ``trainer.class_weights``."""

    def read_labels(self, data: Any, out: Path) -> LabelRasters:  # pragma: no cover - interface
        raise NotImplementedError

    def loss(self, logits: Any, image: Any, rasters: dict[str, Any]) -> tuple[Any, dict[str, float]]:
        raise NotImplementedError  # pragma: no cover - interface

    def on_epoch_end(self, epoch: int, state: TrainState) -> None:
        """Called after every epoch (1-based ``epoch``); the default does nothing."""

    def student_input(self, x: Any) -> Any:
        """The chip batch the network is trained on (e.g. with input noise for a mean teacher); default: ``x``."""
        return x

    def after_step(self, model: Any) -> None:
        """Called after every optimiser step (e.g. a mean teacher's EMA update); the default does nothing."""

    def report(self) -> dict[str, Any]:
        """What goes into ``metrics.json["supervision"]``."""
        return {"type": self.name}


CLASS_WEIGHTS = ("none", "balanced", "sqrt", "enet")
"""Values of ``trainer.class_weights`` (:func:`class_weights`)."""


def class_weights(target: np.ndarray, num_classes: int, mode: str = "none") -> np.ndarray | None:
    """Cross-entropy class weights from the labelled pixels (class index; :data:`IGNORE` = unlabelled).

    ``none`` → None (unweighted). ``balanced`` → ``w_c = n / (K · n_c)``, inverse frequency (scikit-learn's
    "balanced"; for two classes equal to median-frequency balancing, Eigen & Fergus 2015): every class then
    carries the same total weight. ``sqrt`` → ``w_c ∝ 1 / √n_c``, a milder re-weighting, scaled so that
    ``Σ_c n_c w_c = n`` as for ``balanced`` (the mean weight of a labelled pixel is 1). ``enet`` →
    ``w_c = 1 / ln(1.02 + n_c / n)`` (Paszke et al. 2016, ENet): bounded to [1.4, 50], so a class of a few
    pixels does not get a weight in the thousands as with ``balanced``. ``n_c`` counts the
    labelled pixels of class ``c``, ``n`` all of them, ``K`` the classes that have any; a class without
    labelled pixels gets weight 1 (it never occurs as a target, so its weight is never used).
    """
    if mode not in CLASS_WEIGHTS:
        raise ConfigError(f"trainer.class_weights must be one of {', '.join(CLASS_WEIGHTS)}, found '{mode}'")
    if mode == "none":
        return None
    counts = np.bincount(target[target != IGNORE].ravel(), minlength=num_classes)[:num_classes].astype(np.float64)
    present = counts > 0
    w = np.ones(num_classes)
    if not present.any():
        return w
    n, k = counts.sum(), int(present.sum())
    if mode == "balanced":
        w[present] = n / (k * counts[present])
    elif mode == "enet":
        w[present] = 1.0 / np.log(1.02 + counts[present] / n)
    else:
        raw = 1.0 / np.sqrt(counts[present])
        w[present] = raw * n / float((counts[present] * raw).sum())
    return w


def check_args(name: str, args: dict[str, Any] | None, defaults: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with ``args`` (``data.supervision_args``); unknown keys are a ConfigError."""
    args = dict(args or {})
    unknown = sorted(set(args) - set(defaults))
    if unknown:
        raise ConfigError(f"data.supervision_args: unknown key(s) {', '.join(unknown)} for supervision '{name}' "
                          f"(valid: {', '.join(sorted(defaults)) or 'none'})")
    out = dict(defaults)
    for key, value in args.items():
        kind = type(defaults[key])
        try:
            out[key] = kind(value) if defaults[key] is not None and kind is not bool else value
        except (TypeError, ValueError):
            raise ConfigError(f"data.supervision_args.{key}: expected {kind.__name__}, found {value!r}") from None
    return out


def make_objective(data: Any) -> Objective:
    """The objective of ``data.supervision`` (dispatch through :data:`SUPERVISION`)."""
    name = getattr(data, "supervision", None) or "mask"
    if name not in SUPERVISION:
        raise ConfigError(f"data.supervision: '{name}' is not a supervision type "
                          f"(expected one of {', '.join(SUPERVISION)})")
    module, factory = SUPERVISION[name].split(":")
    return getattr(importlib.import_module(module), factory)(name, data)


def class_lookup(class_names: dict[int, str] | None) -> dict[str, int] | None:
    """The config's ``{id: name}`` as the burner's ``{name: id}`` (``None`` when empty)."""
    return {v: int(k) for k, v in (class_names or {}).items()} or None


def sparse_class_raster(data: Any, out: Path, *, what: str) -> LabelRasters:
    """Labels that cover only some pixels (points, lines, sparse rasters) → ``labels.tif``, 255 = unlabelled.

    Vector layers are burnt with ``all_touched=False`` whatever ``data.all_touched`` says: a point burns
    the one pixel that holds it, a line the 1-px stroke of pixels it crosses (GDAL's line rasteriser);
    polygons burn their interior. Pixels no feature covers and pixels two classes claim are unlabelled.
    A label raster is used as it is (unlabelled: ``data.ignore_value``, else its nodata, else 255).
    """
    from geolesf.io.cog import write_cog

    src = Path(data.labels)
    if src.suffix.lower() not in VECTOR_SUFFIXES:
        import rasterio

        with rasterio.open(src) as lab:
            nodata = lab.nodata
        ignore = data.ignore_value if data.ignore_value is not None else (UNLABELLED if nodata is None else None)
        return LabelRasters(src, dict(data.class_names or {}), ignore_value=ignore, report={"labels": str(src)})
    crs, transform, shape = grid_of(data.image)
    burned = burn_vector_labels(src, crs=crs, transform=transform, shape=shape, field=data.label_field,
                                all_touched=False, name_to_id=class_lookup(data.class_names), where=str(data.image))
    for line in burned.notes():
        print(f"note: {line}")
    if not np.any(burned.data >= 0):
        raise DataError(f"{src}: no {what} falls on {Path(data.image).name}")
    arr = np.where((burned.data == UNBURNT) | (burned.data == CONFLICT), UNLABELLED, burned.data).astype(np.uint8)
    path = Path(write_cog(out / "labels.tif", arr, crs=crs, transform=transform, nodata=UNLABELLED,
                          resampling="nearest"))
    print(f"burnt {int(np.count_nonzero(arr != UNLABELLED)):,} labelled px of {src.name} ({what}) → {path}")
    names = {**burned.names, **(data.class_names or {})}
    return LabelRasters(path, names, report={"labels": str(src), "burn": burned.report})


class MaskObjective(TeacherHooks, Objective):
    """Full masks (``data.supervision: mask``, the default): cross-entropy on every labelled pixel.

    ``supervision_args: {mean_teacher: {...}}`` adds the mean teacher (:mod:`geolesf.methods.unet.mean_teacher`)
    for a mask with an unlabelled part: the consistency term acts on every pixel with image data.

    With ``trainer.class_weights`` the cross-entropy is class-weighted (a weighted mean over the batch's
    labelled pixels, as ``F.cross_entropy`` computes it).

    The label reading is the segmentation task's original one: vector features burnt with
    ``data.background`` outside every feature (``data.all_touched`` honoured), or a label raster as is.
    """

    name = "mask"

    def read_labels(self, data: Any, out: Path) -> LabelRasters:
        labels, names = Path(data.labels), dict(data.class_names or {})
        if labels.suffix.lower() not in VECTOR_SUFFIXES:
            return LabelRasters(labels, names, ignore_value=data.ignore_value)
        labels, burned = burn_to_raster(labels, data.image, out / "labels.tif", field_name=data.label_field,
                                        background=data.background, all_touched=data.all_touched,
                                        name_to_id=class_lookup(data.class_names))
        for line in burned.notes():
            print(f"note: {line}")
        print(f"rasterised {data.labels} onto {Path(data.image).name} → {labels}")
        return LabelRasters(labels, {**burned.names, **names}, ignore_value=data.ignore_value,
                            report={"burn": burned.report})

    def loss(self, logits: Any, image: Any, rasters: dict[str, Any]) -> tuple[Any, dict[str, float]]:
        from torch.nn import functional as F

        if (rasters["target"] == IGNORE).all():  # a chip without labels (mean teacher on): the consistency alone
            loss = logits.sum() * 0.0
        else:
            loss = F.cross_entropy(logits, rasters["target"], weight=self.class_weights, ignore_index=IGNORE)
        return self.with_consistency(loss, {"ce": float(loss.detach())}, logits, image, rasters)

    def on_epoch_end(self, epoch: int, state: TrainState) -> None:
        self.teacher_epoch_end(epoch, state)

    def report(self) -> dict[str, Any]:
        if self.teacher is None:
            return {"type": self.name}
        return {"type": self.name, "mean_teacher": dict(self.teacher.options), **self.teacher_report()}


def mask_objective(name: str, data: Any) -> MaskObjective:
    args = check_args(name, getattr(data, "supervision_args", None), {"mean_teacher": None})
    objective = MaskObjective()
    if args["mean_teacher"] is not None:  # semi-supervised: chips without any labelled pixel count too
        objective.teacher, objective.needs_labels = MeanTeacher(args["mean_teacher"]), False
    return objective
