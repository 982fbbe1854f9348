"""OICR refinement: seed mining (MIST / NGIS), pseudo-label assignment, refinement and box losses.

Following the official NDI code (``lib/model/pcl/pcl.py``, built on PCL):

* **MIST** seed mining (Ren et al., CVPR 2020): for every positive class ``c`` take the top
  ``k = int(R · 0.15)`` proposals by the score of ``c`` (at least 1 here, where the official
  ``int()`` would give 0 for R < 7), keep the top-1 always and each further candidate (in score
  order) only if its IoU with **every earlier candidate of the list** is < 0.2 (the official
  ``max(ious[ii, :ii]) < 0.2`` compares with all earlier candidates, kept or not; we do the same).
* **NGIS** (negative-guided instance selection, used by NDI for refinement branch 0): the same
  rule, and a non-top-1 candidate must also have an NDI similarity larger than 3× the mean
  similarity of the candidate list (``N_cos[ii] > 3·mean(N_cos)``).
* **assignment** (``get_proposal_clusters``): every proposal takes the class and score of the seed
  it overlaps most; IoU ≥ 0.5 → that class (1-based, 0 = background) with the seed's score as
  loss weight, otherwise background with the same weight.
* **refinement loss** (``OICRLosses``): ``mean_r(−w_r · log(p_r[label_r] + 1e-6))``.
* **Fast R-CNN targets**: seeds mined with MIST from the last refinement branch; box regression
  targets ``(dx, dy, dw, dh)`` with weights (10, 10, 5, 5) and the +1 pixel width convention,
  smooth-L1 (β = 1) on foreground proposals weighted by the seed score.

Boxes are ``x1, y1, x2, y2`` in pixels; IoU uses the +1 inclusive convention of Detectron's
``bbox_overlaps``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def box_iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from geolesf.metrics.detection import box_iou

    return box_iou(a, b, pixel_offset=1.0)


@dataclass
class Seeds:
    """Pseudo ground truth: boxes ``(S, 4)``, 0-based classes ``(S,)``, scores ``(S,)``."""

    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray


def mine_seeds(
    boxes: np.ndarray,
    scores: np.ndarray,
    image_labels: np.ndarray,
    top_ratio: float = 0.15,
    iou_threshold: float = 0.2,
    similarity: np.ndarray | None = None,
    similarity_factor: float = 3.0,
) -> Seeds:
    """MIST seeds (or NGIS seeds when ``similarity`` (R,) is given) for every positive class.

    ``scores`` is ``(R, C)`` (a background column, if present, must be removed by the caller).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64)
    n = len(boxes)
    k = max(1, min(n, int(n * top_ratio)))
    out_b, out_c, out_s = [], [], []
    for c in np.flatnonzero(np.asarray(image_labels) > 0):
        order = np.argsort(-scores[:, c], kind="stable")[:k]
        cand = boxes[order]
        ious = box_iou_np(cand, cand)
        keep = np.zeros(k, dtype=bool)
        keep[0] = True
        sim = None if similarity is None else np.asarray(similarity, dtype=np.float64)[order]
        for ii in range(1, k):
            ok = bool(np.max(ious[ii, :ii]) < iou_threshold)
            if sim is not None:
                ok = ok and bool(sim[ii] > similarity_factor * sim.mean())
            keep[ii] = ok
        out_b.append(cand[keep])
        out_c.append(np.full(int(keep.sum()), c, dtype=np.int64))
        out_s.append(scores[order[keep], c])
    if not out_b:
        return Seeds(np.zeros((0, 4)), np.zeros(0, dtype=np.int64), np.zeros(0))
    return Seeds(np.concatenate(out_b), np.concatenate(out_c), np.concatenate(out_s))


@dataclass
class Assignment:
    labels: np.ndarray
    """(R,) 0 = background, c + 1 = class c."""
    weights: np.ndarray
    """(R,) loss weight = score of the assigned seed."""
    seed_index: np.ndarray
    """(R,) index of the overlapping seed (-1 for background)."""
    matched_boxes: np.ndarray
    """(R, 4) box of the most-overlapping seed (for regression targets)."""


def assign_pseudo_labels(rois: np.ndarray, seeds: Seeds, fg_threshold: float = 0.5) -> Assignment:
    """OICR/PCL ``get_proposal_clusters``: label each proposal from its most-overlapping seed."""
    rois = np.asarray(rois, dtype=np.float64).reshape(-1, 4)
    n = len(rois)
    if len(seeds.boxes) == 0:
        return Assignment(np.zeros(n, dtype=np.int64), np.zeros(n), np.full(n, -1), rois.copy())
    overlaps = box_iou_np(rois, seeds.boxes)
    j = overlaps.argmax(axis=1)
    best = overlaps.max(axis=1)
    labels = seeds.classes[j] + 1
    weights = seeds.scores[j].astype(np.float64)
    bg = best < fg_threshold
    labels[bg] = 0
    index = j.copy()
    index[bg] = -1
    return Assignment(labels.astype(np.int64), weights, index, seeds.boxes[j])


def refine_loss(prob: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``OICRLosses``: weighted negative log-probability of the pseudo-label, mean over proposals."""
    picked = prob[torch.arange(prob.shape[0], device=prob.device), labels]
    return (-weights * torch.log(picked + eps)).mean()


def encode_boxes(rois: np.ndarray, targets: np.ndarray, weights=BBOX_REG_WEIGHTS) -> np.ndarray:
    """Regression targets ``(dx, dy, dw, dh)`` of ``targets`` relative to ``rois`` (Detectron convention)."""
    wx, wy, ww, wh = weights
    rw = rois[:, 2] - rois[:, 0] + 1.0
    rh = rois[:, 3] - rois[:, 1] + 1.0
    rx = rois[:, 0] + 0.5 * rw
    ry = rois[:, 1] + 0.5 * rh
    tw = targets[:, 2] - targets[:, 0] + 1.0
    th = targets[:, 3] - targets[:, 1] + 1.0
    tx = targets[:, 0] + 0.5 * tw
    ty = targets[:, 1] + 0.5 * th
    return np.stack([wx * (tx - rx) / rw, wy * (ty - ry) / rh, ww * np.log(tw / rw), wh * np.log(th / rh)], 1)


def decode_boxes(rois: torch.Tensor, deltas: torch.Tensor, weights=BBOX_REG_WEIGHTS,
                 clip: float = float(np.log(1000.0 / 8.0))) -> torch.Tensor:
    """Apply ``deltas (R, 4K)`` to ``rois (R, 4)`` → boxes ``(R, 4K)`` (inverse of :func:`encode_boxes`)."""
    wx, wy, ww, wh = weights
    w = rois[:, 2] - rois[:, 0] + 1.0
    h = rois[:, 3] - rois[:, 1] + 1.0
    cx = rois[:, 0] + 0.5 * w
    cy = rois[:, 1] + 0.5 * h
    d = deltas.reshape(deltas.shape[0], -1, 4)
    dx, dy = d[..., 0] / wx, d[..., 1] / wy
    dw, dh = (d[..., 2] / ww).clamp(max=clip), (d[..., 3] / wh).clamp(max=clip)
    pcx = dx * w[:, None] + cx[:, None]
    pcy = dy * h[:, None] + cy[:, None]
    pw = torch.exp(dw) * w[:, None]
    ph = torch.exp(dh) * h[:, None]
    out = torch.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw - 1, pcy + 0.5 * ph - 1], dim=-1)
    return out.reshape(deltas.shape[0], -1)


def frcnn_losses(cls_logits: torch.Tensor, bbox_pred: torch.Tensor, rois: np.ndarray,
                 assignment: Assignment) -> tuple[torch.Tensor, torch.Tensor]:
    """Fast R-CNN classification (weighted CE) and smooth-L1 box loss on pseudo-labels."""
    device = cls_logits.device
    labels = torch.as_tensor(assignment.labels, device=device)
    weights = torch.as_tensor(assignment.weights, dtype=cls_logits.dtype, device=device)
    logp = F.log_softmax(cls_logits, dim=1)
    cls_loss = -(logp[torch.arange(len(labels), device=device), labels] * weights).mean()
    fg = np.flatnonzero(assignment.labels > 0)
    if len(fg) == 0:
        return cls_loss, bbox_pred.sum() * 0.0
    targets = encode_boxes(np.asarray(rois, dtype=np.float64)[fg], assignment.matched_boxes[fg])
    pred = bbox_pred.reshape(bbox_pred.shape[0], -1, 4)[torch.as_tensor(fg, device=device),
                                                         torch.as_tensor(assignment.labels[fg], device=device)]
    diff = (pred - torch.as_tensor(targets, dtype=pred.dtype, device=device)).abs()
    smooth = torch.where(diff < 1.0, 0.5 * diff ** 2, diff - 0.5).sum(dim=1)
    box_loss = (smooth * weights[torch.as_tensor(fg, device=device)]).sum() / max(cls_logits.shape[0], 1)
    return cls_loss, box_loss
