"""``data.supervision: noisy`` — train ``unet`` from an existing but imperfect map, and say where it was overruled.

The labels are a full map that is mostly right (an old land-cover product, a register of footprints
that is out of date), read exactly as ``mask`` labels are (a raster on the image grid or a vector
layer burnt with ``data.background`` outside its features). The loss on a chip batch::

    L = L_fit(logits, noisy labels of the pixels not re-assigned)  +  λ_LR · L_LR

* ``L_fit`` is cross-entropy (``loss: ce``, the default) or the generalized cross-entropy ``(1 − p_y^q)/q`` of
  Zhang & Sabuncu (NeurIPS 2018) (``loss: gce``, ``q`` = 0.7 as in the paper;
  :mod:`geolesf.losses.robust`), which weights each pixel's CE gradient by ``p_y^q`` so pixels the
  model confidently contradicts pull less;
* ``L_LR`` is the label-reassign loss of the single-stage WSSS method (methods.md §8.3;
  :mod:`geolesf.losses.reassign`) on the unet's **decoder embeddings** (the input of its 1×1 head):
  per chip, class prototypes are the mean embedding of the *confident* pixels of each labelled class
  (labelled and predicted alike by the network, ``agree: true``, the default); a pixel whose softmax
  over cosine similarities (T = 0.1) exceeds 0.9 for another class **that the network also predicts
  there** is re-assigned and trained towards it (``reassign: true``; off by default, see
  :data:`DEFAULTS`; λ_LR = 1).

Deviations: (1) in the WSSS spec L_LR is added to the CE on the pseudo labels; here the re-assigned
pixels' noisy label is dropped from ``L_fit`` (keeping both would pull one pixel towards two classes);
(2) re-assignment starts after ``reassign_from_epoch`` epochs (default 2): prototypes of an
untrained network are meaningless; (3) the agreement rule (``agree``): with prototypes averaged over
every labelled pixel and no check against the classifier (the spec's form, ``agree: false``) the
re-assignment fed on itself on SpaceNet — prototypes of an 8-channel decoder embedding built from
noisy labels re-assigned background to building, the re-assigned pixels pulled the embeddings
further, and the final map overruled 50–57 % of the input (mIoU 0.24, below plain CE); requiring the
prototype and the classifier to agree makes a re-assignment a confirmation of what the network,
trained on the mostly-right map, already predicts — confidently (probability ≥ ``threshold``) and after
undoing the prior shift of class weights (:func:`confident_prediction`): with ``trainer.class_weights`` the
weighted network over-predicts the rare class, and agreeing with its plain argmax still fed on itself (SpaceNet
seed 0: 46 % overruled, mIoU 0.38); (4) ``warmup``: the share of the epochs trained
with plain cross-entropy before GCE takes over (0 = GCE from the start, the paper) — GCE scales each
pixel's gradient by ``p_y^q``, which from a random start starves a rare class (buildings on 4 % of a
scene) whose ``p_y`` is small everywhere. Class weights (``trainer.class_weights``, when the trainer
sets them) weigh both CE and GCE. The embeddings are read by a forward hook on the model's head,
registered by the per-epoch hook before training (epoch 0). After the last epoch the BatchNorm
statistics are re-estimated on the scene (:mod:`geolesf.methods.unet.calibration`).

**Overruled**: after training, the run predicts the training scene and compares it with the input
map. ``overruled.tif`` (georeferenced, with ``.qml``) marks each pixel: 0 = the prediction keeps the
input class, 1 = overruled (the predicted class differs), 255 = unlabelled in the input;
``metrics.json["supervision"]["overruled"]`` gives the share overall and per input class, and where
the overruled pixels went (input class → predicted class pixel counts).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from geolesf.errors import ConfigError
from geolesf.losses.reassign import label_reassign_loss
from geolesf.losses.robust import generalized_cross_entropy
from geolesf.methods.unet.calibration import recalibrate_batchnorm
from geolesf.methods.unet.objectives import IGNORE, LabelRasters, MaskObjective, check_args

DEFAULTS = {"loss": "ce", "q": 0.7, "reassign": False, "lambda_lr": 1.0, "temperature": 0.1, "threshold": 0.9,
            "reassign_from_epoch": 2, "agree": True, "warmup": 0.0, "overrule_confidence": 0.0}
"""``data.supervision_args`` of ``noisy`` (``agree``: re-assign only where the classifier agrees; ``warmup``:
share of the epochs trained with CE before GCE). The defaults are what measured best on the SpaceNet benchmark
(docs/weak_supervision.md): plain cross-entropy, no re-assignment — GCE fit slower in the short budget
and the label-reassign loss fed on itself; both stay available (``loss: gce``, ``reassign: true``)."""
LOSSES = ("ce", "gce")
OVERRULED_NAMES = {0: "kept", 1: "overruled", 2: "unsure"}
OVERRULED_COLORS = {0: (220, 220, 220), 1: (215, 25, 28), 2: (253, 174, 97)}


class HeadInput:
    """Forward hook on a dense model's 1×1 head that keeps its input: the decoder embeddings."""

    def __init__(self, model: torch.nn.Module) -> None:
        head = getattr(model, "head", None) or getattr(model, "segmentation_head", None)
        if head is None:
            raise ConfigError("noisy: the label-reassign loss needs a model with a 'head' (or "
                              "'segmentation_head') module whose input are the decoder embeddings")
        self.value: torch.Tensor | None = None
        self.handle = head.register_forward_hook(self._keep)

    def _keep(self, module: Any, inputs: Any, output: Any) -> None:
        self.value = inputs[0]

    def take(self) -> torch.Tensor | None:
        value, self.value = self.value, None
        return value


class NoisyObjective(MaskObjective):
    """Robust fit of a noisy full map (+ label reassign); reports the overruled share."""

    name = "noisy"

    def __init__(self, **options: Any) -> None:
        self.options = dict(DEFAULTS, **options)
        if self.options["loss"] not in LOSSES:
            raise ConfigError(f"data.supervision_args.loss: expected one of {', '.join(LOSSES)}, "
                              f"found '{self.options['loss']}'")
        self.hook: HeadInput | None = None
        self.epoch, self.epochs = 0, 0
        self.reassigned = 0
        self.labelled = 0
        self.run: dict[str, Any] = {}

    def read_labels(self, data: Any, out: Path) -> LabelRasters:
        read = super().read_labels(data, out)
        self.run = {"out": Path(out), "image": data.image, "labels": read.labels, "ignore": read.ignore_value}
        return read

    def loss(self, logits: Any, image: Any, rasters: dict[str, Any]) -> tuple[Any, dict[str, float]]:
        o = self.options
        target = rasters["target"]
        emb = self.hook.take() if self.hook is not None else None
        lr = logits.sum() * 0.0
        moved = torch.zeros_like(target, dtype=torch.bool)
        if o["reassign"] and emb is not None and self.epoch + 1 >= o["reassign_from_epoch"]:
            labels = torch.where(target == IGNORE, torch.full_like(target, 255), target)
            allowed = torch.stack([torch.bincount(t[t != 255], minlength=logits.shape[1]) > 0 for t in labels])
            lr, moved = label_reassign_loss(logits, emb, labels, allowed, temperature=o["temperature"],
                                            threshold=o["threshold"], agree=bool(o["agree"]),
                                            prediction=confident_prediction(logits, self._weights(), o["threshold"]))
        kept = torch.where(moved, torch.full_like(target, IGNORE), target)
        weight = self._weights()
        if o["loss"] == "gce" and self.epoch >= round(o["warmup"] * self.epochs):
            fit = generalized_cross_entropy(logits, kept, q=o["q"], ignore_index=IGNORE, weight=weight)
        elif (kept != IGNORE).any():
            fit = F.cross_entropy(logits, kept, weight=weight, ignore_index=IGNORE)
        else:
            fit = logits.sum() * 0.0
        self.reassigned += int(moved.sum())
        self.labelled += int((target != IGNORE).sum())
        return fit + o["lambda_lr"] * lr, {"fit": float(fit.detach()), "reassign": float(lr.detach()),
                                            "reassigned_share": float(moved.float().mean())}

    def _weights(self) -> torch.Tensor | None:
        """The trainer's class weights (``trainer.class_weights``), if it set them."""
        return getattr(self, "class_weights", None)

    def on_epoch_end(self, epoch: int, state: Any) -> None:
        self.epoch, self.epochs = epoch, int(getattr(state, "epochs", 0))
        self.run["device"] = state.device
        if self.options["reassign"] and self.hook is None:
            self.hook = HeadInput(state.model)
        if epoch == getattr(state, "epochs", -1):  # after the last epoch: BatchNorm statistics of the final weights
            self.run["calibrated_chips"] = recalibrate_batchnorm(state.model, state.image, state.chip,
                                                                 device=state.device)

    def report(self) -> dict[str, Any]:
        if self.hook is not None:
            self.hook.handle.remove()
        o = self.options
        loss = ("generalized cross-entropy (Zhang & Sabuncu 2018)" if o["loss"] == "gce" else "cross-entropy") + \
            (" + λ_LR · label-reassign loss (decoder-embedding prototypes)" if o["reassign"] else "")
        rep: dict[str, Any] = {"type": self.name, "loss": loss, "options": dict(o),
                               "reassigned_share_during_training": self.reassigned / max(self.labelled, 1),
                               "batchnorm_recalibrated_on_chips": self.run.get("calibrated_chips", 0)}
        model = self.run.get("out", Path("-")) / "model.pt"
        if model.is_file():
            weight = self._weights()
            rep["overruled"] = write_overruled(model, self.run["image"], self.run["labels"],
                                               self.run["out"] / "overruled.tif", ignore_value=self.run["ignore"],
                                               device=self.run.get("device", "cpu"),
                                               confidence=float(o["overrule_confidence"]),
                                               class_weights=None if weight is None else weight.cpu().numpy())
        return rep


def confident_prediction(logits: torch.Tensor, weight: torch.Tensor | None, threshold: float) -> torch.Tensor:
    """``(B, H, W)`` the classifier's class where its probability reaches ``threshold``, −1 elsewhere; with class
    weights the probabilities are first corrected back to the unweighted posterior (``p_c / w_c``, renormalised:
    a class-weighted network over-predicts its up-weighted classes, and agreeing with that bias fed the
    re-assignment)."""
    p = logits.detach().softmax(1)
    if weight is not None:
        p = p / weight.to(p)[None, :, None, None]
        p = p / p.sum(1, keepdim=True)
    conf, best = p.max(1)
    return torch.where(conf >= threshold, best, torch.full_like(best, -1))


def overruled_stats(pred: np.ndarray, labels: np.ndarray, labelled: np.ndarray,
                    class_names: dict[int, str]) -> tuple[np.ndarray, dict[str, Any]]:
    """``(overruled raster, stats)``: 1 where the prediction differs from a labelled input pixel, 0 where it
    agrees, 255 where the input is unlabelled; the overall and per-input-class shares and where they went."""
    over = np.where(labelled, (pred != labels).astype(np.uint8), 255).astype(np.uint8)
    n = int(labelled.sum())
    per_class, moved_to = {}, {}
    for c in sorted(int(v) for v in np.unique(labels[labelled])):
        here = labelled & (labels == c)
        name = class_names.get(c, f"class {c}")
        per_class[name] = {"class_id": c, "pixels": int(here.sum()), "overruled": int((over[here] == 1).sum()),
                           "share": float((over[here] == 1).mean())}
        went = pred[here & (over == 1)]
        ids, counts = np.unique(went, return_counts=True)
        moved_to[name] = {class_names.get(int(i), f"class {i}"): int(k) for i, k in zip(ids, counts)}
    stats = {"share": float((over == 1).sum() / max(n, 1)), "pixels": int((over == 1).sum()), "labelled": n,
             "per_class": per_class, "to": moved_to, "raster": "overruled.tif",
             "legend": {"0": "prediction keeps the input class", "1": "overruled", "255": "unlabelled in the input"}}
    return over, stats


def _predict_with_confidence(pm: Any, image: Any, device: str, weights: np.ndarray | None) -> tuple[Any, ...]:
    """``(class map, its nodata, crs, transform, probability of the predicted class)`` of ``image``; the
    probabilities corrected back to the unweighted posterior when the run used class ``weights``."""
    import rasterio

    from geolesf.predict.tiled import predict_raster

    with tempfile.TemporaryDirectory() as tmp:
        predict_raster(image, pm, Path(tmp) / "pred.tif", device=device, progress=False, qml=False,
                       probabilities=Path(tmp) / "probs.tif")
        with rasterio.open(Path(tmp) / "pred.tif") as src:
            pred, pred_nd, crs, transform = src.read(1), src.nodata, src.crs, src.transform
        with rasterio.open(Path(tmp) / "probs.tif") as src:
            probs = np.nan_to_num(src.read().astype(np.float64))
    if weights is not None:
        probs = probs / np.asarray(weights, dtype=np.float64).reshape(-1, 1, 1)
        probs = probs / np.maximum(probs.sum(0, keepdims=True), 1e-12)
    lut = np.zeros(max(256, int(pred.max()) + 1), dtype=np.int64)
    lut[list(pm.class_ids)] = np.arange(len(pm.class_ids))
    p_pred = np.take_along_axis(probs, lut[pred][None], 0)[0]
    return pred, pred_nd, crs, transform, p_pred


def write_overruled(checkpoint: Path, image: Any, labels: Any, out: Path, *, ignore_value: int | None,
                    device: str = "cpu", confidence: float = 0.0,
                    class_weights: np.ndarray | None = None) -> dict[str, Any]:
    """Predict ``image`` with ``checkpoint``, compare with the input ``labels``; write ``out`` (+ ``.qml``).

    ``confidence`` > 0: an overruled pixel whose predicted class has a (class-weight corrected) probability
    below it is written as 2 ("unsure") instead of 1 and left out of the overruled counts."""
    import rasterio

    from geolesf.io.atomic import atomic_path
    from geolesf.io.writers import write_class_map
    from geolesf.methods.unet.evaluate import predict_map
    from geolesf.predict.model import load_predict_model

    pm = load_predict_model(checkpoint)
    p_pred = None
    if confidence > 0:
        pred, pred_nd, crs, transform, p_pred = _predict_with_confidence(pm, image, device, class_weights)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            pred_tif = predict_map(pm, image, Path(tmp) / "pred.tif", device=device, qml=False)
            with rasterio.open(pred_tif) as src:
                pred, pred_nd, crs, transform = src.read(1), src.nodata, src.crs, src.transform
    with rasterio.open(labels) as lab:
        truth, nodata = lab.read(1), lab.nodata
    ignore = nodata if ignore_value is None else ignore_value
    labelled = np.isin(truth, pm.class_ids) & (truth != ignore if ignore is not None else True)
    if pred_nd is not None:
        labelled &= pred != pred_nd
    names = {int(i): str(n) for i, n in zip(pm.class_ids, pm.class_names)}
    over, stats = overruled_stats(pred, truth, labelled, names)
    values = [0, 1]
    if p_pred is not None:
        unsure = (over == 1) & (p_pred < confidence)
        over, stats = overruled_stats(np.where(unsure, truth, pred), truth, labelled, names)
        over[unsure] = 2
        stats.update(confidence=confidence, unsure_pixels=int(unsure.sum()),
                     unsure_share=float(unsure.sum() / max(int(labelled.sum()), 1)))
        stats["legend"]["2"] = f"prediction differs, probability below {confidence}"
        values = [0, 1, 2]
    with atomic_path(out, suffix=".tif", create=False) as tmp_path:
        write_class_map(tmp_path, over, {v: OVERRULED_NAMES[v] for v in values},
                        {v: OVERRULED_COLORS[v] for v in values}, crs=crs, transform=transform, nodata=255, qml=False)
    from geolesf.io.qml import raster_qml, write_qml

    write_qml(out.with_suffix(".qml"), raster_qml(values, [OVERRULED_NAMES[v] for v in values],
                                                  [OVERRULED_COLORS[v] for v in values]))
    print(f"[noisy] the prediction overrules {100 * stats['share']:.2f} % of the input map's labelled pixels → {out}")
    return stats


def noisy_objective(name: str, data: Any) -> NoisyObjective:
    """Factory of ``noisy`` (:data:`geolesf.methods.unet.objectives.SUPERVISION`)."""
    return NoisyObjective(**check_args(name, getattr(data, "supervision_args", None), DEFAULTS))

