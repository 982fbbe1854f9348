"""Noise-robust classification losses for training from imperfect label maps.

Generalized cross-entropy (GCE; Zhang & Sabuncu, "Generalized Cross Entropy Loss for Training Deep
Neural Networks with Noisy Labels", NeurIPS 2018): ``L_q(p, y) = (1 − p_y^q) / q`` with ``0 < q ≤ 1``.
``q → 0`` gives cross-entropy, ``q = 1`` the mean absolute error (robust but slow to fit); the paper
uses ``q = 0.7``. Its gradient is CE's gradient weighted by ``p_y^q``, so pixels the model confidently
disagrees with (likely label noise) pull less. The paper's truncated variant (``L_q`` capped for
``p_y < k``, with pruning rounds) is not implemented; the plain ``L_q`` is.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def generalized_cross_entropy(logits: torch.Tensor, target: torch.Tensor, *, q: float = 0.7,
                              ignore_index: int = -100, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean ``(1 − p_y^q) / q`` of ``(B, K, H, W)`` (or ``(N, K)``) logits over targets ≠ ``ignore_index``;
    0 (with a graph) when every target is ignored. ``weight`` ``(K,)``: class weights, the weighted mean
    ``Σ w_y L / Σ w_y`` (as ``F.cross_entropy`` weighs)."""
    if not 0 < q <= 1:
        raise ValueError(f"q must be in (0, 1], found {q}")
    keep = target != ignore_index
    if not keep.any():
        return logits.sum() * 0.0
    log_p = F.log_softmax(logits, dim=1)
    safe = torch.where(keep, target, torch.zeros_like(target)).long()
    log_py = log_p.gather(1, safe.unsqueeze(1)).squeeze(1)
    loss = (1.0 - torch.exp(q * log_py)) / q
    if weight is None:
        return loss[keep].mean()
    w = weight.to(loss.dtype)[safe][keep]
    return (loss[keep] * w).sum() / w.sum()
