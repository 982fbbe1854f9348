"""The label-reassign (LR) loss: correct likely-wrong pseudo labels with class prototypes (methods.md §8.3).

For each image, the prototype ``μ_c`` of class ``c`` is the mean embedding of its confident pixels
(pseudo label ``c``, not ignore), detached (stop-gradient). Every labelled pixel ``i`` gets
``q_i = softmax_c(cos(e_i, μ_c) / T)`` over the image's classes that have a prototype (its tagged
classes + background); when ``max q_i > threshold`` (0.9) and ``argmax q_i ≠ ŷ_i`` the pixel is
re-assigned to ``ỹ_i = argmax q_i`` and ``L_LR = CE(seg_logits_i, ỹ_i)`` averaged over the
re-assigned pixels (0 when none). T = 0.1. The exact form in the paper is NOT FOUND; this is
the spec's choice.

``prediction`` (optional, the segmentation head's detached argmax) makes the re-assignment
*agree with the classifier*: the prototypes are the means of the pixels whose prediction agrees with
their label (the spec's "confident pixels": labelled and predicted alike), and a pixel is re-assigned
only when the prototype's class is also the class the network predicts there (and its own label's class
has a prototype to compare with). Without it (the
spec's form) prototypes average every labelled pixel, wrong labels included, and on a noisy full map
re-assignment can feed on itself (measured on SpaceNet: 50–57 % of the map overruled).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def class_prototypes(emb: torch.Tensor, labels: torch.Tensor, num_classes: int,
                     ignore_index: int = 255) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image class means of ``(B, E, h, w)`` embeddings: ``(B, K, E)`` and presence ``(B, K)``."""
    b, e = emb.shape[:2]
    flat = emb.detach().flatten(2).transpose(1, 2)  # (B, N, E)
    lab = labels.flatten(1)
    onehot = torch.zeros(b, lab.shape[1], num_classes, dtype=emb.dtype, device=emb.device)
    ok = lab != ignore_index
    onehot[ok] = F.one_hot(lab[ok].long(), num_classes).to(emb.dtype)
    counts = onehot.sum(1)  # (B, K)
    protos = onehot.transpose(1, 2) @ flat / counts.clamp_min(1)[..., None]
    return protos, counts > 0


def reassign_labels(emb: torch.Tensor, labels: torch.Tensor, allowed: torch.Tensor, *, temperature: float = 0.1,
                    threshold: float = 0.9, ignore_index: int = 255,
                    prediction: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(new labels (B, h, w), reassigned mask (B, h, w))`` for embeddings and pseudo labels.

    ``allowed`` ``(B, K)`` marks the classes an image may contain (its tags + background);
    ``prediction`` ``(B, h, w)`` the classifier's class per pixel (module docstring: agreement).
    """
    k = allowed.shape[1]
    confident = labels if prediction is None else torch.where(prediction == labels, labels,
                                                              torch.full_like(labels, ignore_index))
    protos, present = class_prototypes(emb, confident, k, ignore_index)
    cand = allowed.bool() & present
    e = F.normalize(emb.detach().flatten(2), dim=1)  # (B, E, N)
    mu = F.normalize(protos, dim=-1)  # (B, K, E)
    sim = (mu @ e) / temperature  # (B, K, N)
    sim = sim.masked_fill(~cand[:, :, None], float("-inf"))
    q = sim.softmax(1)
    q = torch.nan_to_num(q, nan=0.0)
    conf, best = q.max(1)
    lab = labels.flatten(1)
    has_any = cand.any(1, keepdim=True)
    moved = (lab != ignore_index) & (conf > threshold) & (best != lab) & has_any
    if prediction is not None:  # and the pixel's own class has a prototype: a lone prototype wins every softmax
        own = torch.gather(cand, 1, torch.where(lab == ignore_index, torch.zeros_like(lab), lab).long())
        moved &= (best == prediction.flatten(1)) & own
    new = torch.where(moved, best, lab)
    shape = labels.shape
    return new.reshape(shape), moved.reshape(shape)


def label_reassign_loss(seg_logits: torch.Tensor, emb: torch.Tensor, labels: torch.Tensor, allowed: torch.Tensor, *,
                        temperature: float = 0.1, threshold: float = 0.9, ignore_index: int = 255,
                        agree: bool = False,
                        prediction: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_LR, reassigned mask)``: cross-entropy of ``seg_logits`` ``(B, K, h, w)`` on re-assigned pixels;
    ``agree``: only where the classifier predicts the prototype's class — ``prediction`` ``(B, h, w)`` when given
    (e.g. confident pixels only, −1 elsewhere), else ``seg_logits``' argmax."""
    pred = (seg_logits.detach().argmax(1) if prediction is None else prediction) if agree else None
    new, moved = reassign_labels(emb, labels, allowed, temperature=temperature, threshold=threshold,
                                 ignore_index=ignore_index, prediction=pred)
    if not moved.any():
        return seg_logits.sum() * 0.0, moved
    target = torch.where(moved, new, torch.full_like(new, ignore_index))
    return F.cross_entropy(seg_logits, target.long(), ignore_index=ignore_index), moved
