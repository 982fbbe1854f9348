"""Box-driven pseudo-masks and recursive training, in the manner of Khoreva et al., "Simple Does It" (CVPR 2017).

``data.supervision: boxes`` with ``supervision_args.mode: recursive`` (:mod:`geolesf.methods.unet.boxes`)
trains plain cross-entropy on pseudo-masks that start from the boxes and are re-estimated from the
network's own predictions in rounds:

* **round 0 (Box^i of the paper)**: pixels outside every box are background; inside a box only the
  centred inner rectangle holding ``inner`` of the box's area (default 0.2, as in the paper: the box
  scaled by √0.2 about its centre) is labelled with the box's class, the rest of the box is *ignored*
  (neither class nor background) — a tight box's centre is almost always the object, its corners
  often are not (:func:`initial_target`);
* **each later round** (``rounds`` of them, evenly spread over the epochs, or over those after the first
  ``start`` share of them): the current network predicts
  the whole training scene and the prediction becomes the label (:func:`pseudo_target`) under the
  paper's three rules: (a) *box enforcing* — every pixel outside all boxes is background; (b) *outlier
  reset* — a box in which the predicted segment of its class covers less than ``min_fill`` of the box
  (the paper: IoU with the box < 50 %) is reset to its round-0 labels; (c) the paper's DenseCRF is **not**
  used (deviation: no CRF dependency; instead pixels whose top class probability is below
  ``confidence`` are ignored, the uncertain band the CRF would otherwise decide).

Round 0 from the image (``init: randomwalk``, in the manner of the paper's GrabCut variants, which beat Box^i
there): the Box^i labels seed a random walk (Grady 2006) inside each box — the box centre as the object, the
background just outside the box — and the walk's confident pixels (``confidence``, at least 0.5) label the box
ring; a box whose object share stays below ``min_fill`` keeps its Box^i labels
(:func:`random_walk_probabilities_in_boxes` then :func:`pseudo_target`). GrabCut itself is not used (no
OpenCV colour-model dependency on any band count).

Semantic deviations (the paper trains one class per box for PASCAL objects): a pixel inside boxes is
labelled with the predicted class only when that class is allowed there — background, or the class of a
box covering it — otherwise it is ignored; boxes are painted largest first so a smaller box on top of
a larger one decides its pixels. The paper trains each round to convergence from the previous round's
weights; here the rounds continue one training run (one learning-rate schedule). Before each round's
prediction the BatchNorm statistics are re-estimated with the current weights
(:mod:`geolesf.methods.unet.calibration`), so the evaluation-mode prediction is the one the weights
make. With cross-entropy class weights (``trainer.class_weights``) the probabilities are corrected back to
the unweighted posterior before the argmax (:func:`prior_corrected`): a class-weighted network over-predicts
its up-weighted classes, and the rounds would grow every object to its box.
"""

from __future__ import annotations

import numpy as np
import torch

IGNORE = -100
"""Target value of ignored pixels (the trainer's ignore index)."""


def inner_ranges(ranges: np.ndarray, share: float) -> np.ndarray:
    """Inclusive pixel ranges ``[c0, r0, c1, r1]`` of each box scaled about its centre to ``share`` of its
    area (each side by √share, at least one pixel); ``share >= 1`` returns the boxes unchanged."""
    r = np.asarray(ranges, dtype=np.int64).reshape(-1, 4)
    if share >= 1:
        return r.copy()
    scale = float(np.sqrt(max(share, 0.0)))
    out = []
    for c0, r0, c1, r1 in r:
        w, h = c1 - c0 + 1, r1 - r0 + 1
        iw, ih = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
        x0, y0 = c0 + (w - iw) // 2, r0 + (h - ih) // 2
        out.append([x0, y0, x0 + iw - 1, y0 + ih - 1])
    return np.asarray(out, dtype=np.int64).reshape(-1, 4)


def _area_order(ranges: np.ndarray) -> np.ndarray:
    """Box indices, largest area first (a smaller box painted later stays on top)."""
    r = np.asarray(ranges, dtype=np.int64).reshape(-1, 4)
    return np.argsort(-(r[:, 2] - r[:, 0] + 1) * (r[:, 3] - r[:, 1] + 1), kind="stable")


def initial_target(ranges: np.ndarray, channels: np.ndarray, shape: tuple[int, int], background: int,
                   inner: float) -> np.ndarray:
    """Round-0 target ``(H, W)`` int64: ``background`` outside every box, :data:`IGNORE` inside, each box's
    inner rectangle (``inner`` of its area) its class channel; boxes painted largest first."""
    out = np.full(shape, background, dtype=np.int64)
    r = np.asarray(ranges, dtype=np.int64).reshape(-1, 4)
    core = inner_ranges(r, inner)
    for i in _area_order(r):
        c0, r0, c1, r1 = r[i]
        out[max(r0, 0):r1 + 1, max(c0, 0):c1 + 1] = IGNORE
        x0, y0, x1, y1 = core[i]
        out[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1] = int(channels[i])
    return out


def pseudo_target(probs: np.ndarray, ranges: np.ndarray, channels: np.ndarray, initial: np.ndarray,
                  background: int, *, min_fill: float = 0.5,
                  confidence: float = 0.0) -> tuple[np.ndarray, dict[str, float]]:
    """One round's target from the scene's class probabilities ``probs`` ``(K, H, W)``.

    Outside every box: ``background``. Inside boxes: the predicted class (argmax) where it is allowed —
    background or the class of a box covering the pixel — and its probability reaches ``confidence``,
    else :data:`IGNORE`. A box whose own class covers less than ``min_fill`` of it in the prediction is
    reset to its ``initial`` labels. Returns ``(target, stats)`` with the share of boxes reset and the
    share of in-box pixels labelled with a box class.
    """
    k, h, w = probs.shape
    r = np.asarray(ranges, dtype=np.int64).reshape(-1, 4)
    best, top = probs.argmax(0), probs.max(0)
    allowed = np.zeros((k, h, w), dtype=bool)
    allowed[background] = True
    inside = np.zeros((h, w), dtype=bool)
    for (c0, r0, c1, r1), ch in zip(r, channels):
        allowed[int(ch), r0:r1 + 1, c0:c1 + 1] = True
        inside[r0:r1 + 1, c0:c1 + 1] = True
    ok = np.take_along_axis(allowed, best[None], 0)[0] & (top >= confidence)
    label = np.where(ok, best, IGNORE)
    out = np.where(inside, label, background).astype(np.int64)
    reset = 0
    for i in _area_order(r):
        c0, r0, c1, r1 = r[i]
        window = (slice(r0, r1 + 1), slice(c0, c1 + 1))
        if np.mean(best[window] == int(channels[i])) < min_fill:
            out[window] = initial[window]
            reset += 1
        else:
            out[window] = label[window]
    objects = inside & (out != IGNORE) & (out != background)
    stats = {"boxes_reset": reset / max(len(r), 1),
             "box_pixels_object": float(objects.sum() / max(inside.sum(), 1)),
             "box_pixels_ignored": float(((out == IGNORE) & inside).sum() / max(inside.sum(), 1))}
    return out, stats


def random_walk_probabilities_in_boxes(image: np.ndarray, seeds: np.ndarray, ranges: np.ndarray, num_classes: int,
                                       *, beta: float = 10.0, margin: int = 2,
                                       valid: np.ndarray | None = None) -> np.ndarray:
    """``(K, H, W)`` class probabilities: one-hot where ``seeds`` (class index, :data:`IGNORE`) is labelled, and
    inside each box the random walk of Grady (2006, :func:`geolesf.data.propagation.random_walk_probabilities`)
    from the seeds of the box's window (the box grown by ``margin`` px: its centre and the background around
    it); boxes solved largest first, so a smaller box decides the pixels it shares with a larger one."""
    from geolesf.data.propagation import random_walk_probabilities

    k, (h, w) = num_classes, seeds.shape
    out = np.zeros((k, h, w), dtype=np.float32)
    rows, cols = np.nonzero(seeds != IGNORE)
    out[seeds[rows, cols], rows, cols] = 1.0
    ok = np.ones((h, w), dtype=bool) if valid is None else valid.astype(bool)
    r = np.asarray(ranges, dtype=np.int64).reshape(-1, 4)
    for i in _area_order(r):
        c0, r0, c1, r1 = r[i]
        y0, y1, x0, x1 = max(r0 - margin, 0), min(r1 + margin + 1, h), max(c0 - margin, 0), min(c1 + margin + 1, w)
        win = (slice(y0, y1), slice(x0, x1))
        prob = random_walk_probabilities(image[(slice(None), *win)], seeds[win], k, beta=beta, valid=ok[win])
        box = (slice(r0 - y0, r1 - y0 + 1), slice(c0 - x0, c1 - x0 + 1))
        out[:, r0:r1 + 1, c0:c1 + 1] = prob[(slice(None), *box)]
    return out


def prior_corrected(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Class probabilities ``(K, H, W)`` of a network trained with cross-entropy class weights ``w`` ``(K,)``,
    corrected back to the unweighted posterior: weighting class ``c`` by ``w_c`` multiplies its prior, so the
    weighted network estimates ``∝ w_c · p(c | x)``; dividing by ``w_c`` and renormalising undoes that (the prior
    adjustment of Saerens, Latinne & Decaestecker, Neural Computation 2002)."""
    w = np.asarray(weights, dtype=np.float64).reshape(-1, 1, 1)
    p = probs.astype(np.float64) / np.maximum(w, 1e-12)
    return (p / np.maximum(p.sum(0, keepdims=True), 1e-12)).astype(np.float32)


def round_epochs(epochs: int, rounds: int, start: float = 0.0) -> list[int]:
    """The epochs after which a pseudo-label round runs: ``rounds`` evenly spread over the epochs after the first
    ``start`` share of them (the first round after ``start · epochs``, rounded), never after the last."""
    if rounds <= 0 or epochs < 2:
        return []
    first = start * epochs
    picks = {int(round(first + (epochs - first) * i / rounds)) if start > 0
             else int(round(epochs * (i + 1) / (rounds + 1))) for i in range(rounds)}
    return sorted(e for e in picks if 1 <= e < epochs)


@torch.no_grad()
def scene_probabilities(model: torch.nn.Module, image: np.ndarray, *, device: str = "cpu",
                        tile: int = 512) -> np.ndarray:
    """Softmax probabilities ``(K, H, W)`` of ``model`` (evaluation mode) on a normalised scene ``(bands, H, W)``,
    in ``tile``-px windows padded (reflect) to the model's size divisor."""
    from torch.nn import functional as F

    div = int(getattr(model, "size_divisor", 1))
    _, h, w = image.shape
    was_training = model.training
    model.eval()
    out = None
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            part = torch.from_numpy(np.ascontiguousarray(image[:, y:y + tile, x:x + tile]))[None].to(device)
            ph, pw = part.shape[-2:]
            pad_h, pad_w = (-ph) % div, (-pw) % div
            mode = "reflect" if pad_h < ph and pad_w < pw else "replicate"
            padded = F.pad(part, (0, pad_w, 0, pad_h), mode=mode) if pad_h or pad_w else part
            p = model(padded).softmax(1)[0, :, :ph, :pw].cpu().numpy()
            if out is None:
                out = np.zeros((p.shape[0], h, w), dtype=np.float32)
            out[:, y:y + ph, x:x + pw] = p
    model.train(was_training)
    return out
