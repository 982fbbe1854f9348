"""Negative deterministic information (NDI): memory, NCL loss, NICE loss (methods.md §7.2–7.3).

**Collection** (:meth:`NDIMemory.update`, no gradients): for every proposal take
``(v, c) = max / argmax_c mil_score``; it is a *negative instance* when ``c`` is not an image
label and ``v ≥ τ`` (0.05). Its feature and score enter the per-class queue ``NDI[c]`` (length 5);
once the queue is full the incoming ``(f, s)`` is merged into the stored entry with the largest
cosine similarity: ``ρ = s / (s + s_old + 1e-4)``, ``f_old ← ρ f + (1 − ρ) f_old``,
``s_old ← ρ s + (1 − ρ) s_old``. Proposals are processed one after another, as in the official
code, so a later proposal sees the merges of earlier ones.

**NCL** (:func:`ncl_loss`): for each proposal with top MIL class ``c``, ``v ≥ τ`` and a non-empty
``NDI[c]``: ``sim = max_j cos(f, NDI[c]_j)``; ``L = α · Σ sim · s_{j*} / (n_valid + 1)`` (α = 0.3).
Also returns the per-proposal similarity used by NGIS (0 where not computed).

**NICE** (:func:`nice_loss`): proposals whose top class is not an image label (and, with a
background column, not background) and whose score is ≥ a threshold: ``L = −Σ log(1 − v + eps) / R``
(the official code divides by the number of *all* proposals, i.e. a mean over proposals of the
masked term). The official repository ``GC-WSL/NDI`` has two versions of this loss, selected here
by ``variant`` (model argument ``nice_variant``):

* ``"standalone"`` (default) — ``NDI.py`` ``Build_NDI.NICE_loss``, the form methods.md §7.3
  specifies: threshold τ (``ndi_tau``, 0.05), ``eps = 1e-5``;
* ``"training"`` — the path the official training script actually runs,
  ``lib/modeling/model_builder.py`` ``NICE_loss`` → ``bce(1 − v, flag)``: proposals are dropped
  only when ``value < 0.001`` (threshold 0.001, independent of τ), ``eps = 1e-6``.

Both keep τ = 0.05 for the memory and NCL.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NDIMemory(nn.Module):
    """Per-class queues of negative-instance features and scores (buffers: saved, never trained)."""

    def __init__(self, num_classes: int, dim: int, length: int = 5, tau: float = 0.05) -> None:
        super().__init__()
        self.length, self.tau = int(length), float(tau)
        self.register_buffer("features", torch.zeros(num_classes, self.length, dim))
        self.register_buffer("scores", torch.zeros(num_classes, self.length))
        self.register_buffer("count", torch.zeros(num_classes, dtype=torch.long))

    def negatives(self, mil_score: torch.Tensor, image_labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(mask, v, c)``: proposals whose top class is absent from the image with ``v ≥ τ``."""
        v, c = mil_score.detach().max(dim=1)
        mask = (image_labels.to(mil_score.device)[c] <= 0) & (v >= self.tau)
        return mask, v, c

    @torch.no_grad()
    def update(self, features: torch.Tensor, mil_score: torch.Tensor, image_labels: torch.Tensor) -> int:
        """Add this image's negative instances; returns how many were collected."""
        mask, v, c = self.negatives(mil_score, image_labels)
        feats = features.detach()[mask].to(self.features.dtype)
        for f, s, k in zip(feats, v[mask].to(self.scores.dtype), c[mask].tolist()):
            n = int(self.count[k])
            if n < self.length:
                self.features[k, n] = f
                self.scores[k, n] = s
                self.count[k] = n + 1
            else:
                sims = F.cosine_similarity(f[None], self.features[k], dim=1)
                j = int(torch.argmax(sims))
                s_old = self.scores[k, j]
                rho = s / (s + s_old + 1e-4)
                self.features[k, j] = rho * f + (1 - rho) * self.features[k, j]
                self.scores[k, j] = rho * s + (1 - rho) * s_old
        return int(mask.sum())

    def similarity(self, features: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Max cosine similarity of each feature to the memory of its class: ``(sim, slot, has_memory)``."""
        mem = self.features[classes]  # (R, Q, D)
        sims = F.cosine_similarity(features[:, None, :], mem, dim=2)  # (R, Q)
        filled = torch.arange(self.length, device=features.device)[None, :] < self.count[classes][:, None]
        sims = sims.masked_fill(~filled, float("-inf"))
        best, slot = sims.max(dim=1)
        has = self.count[classes] > 0
        return torch.where(has, best, torch.zeros_like(best)), slot, has


def ncl_loss(features: torch.Tensor, mil_score: torch.Tensor, memory: NDIMemory,
             alpha: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """Negative contrastive loss and the per-proposal NDI similarity (detached, for NGIS)."""
    v, c = mil_score.detach().max(dim=1)
    sim, slot, has = memory.similarity(features, c)
    valid = has & (v >= memory.tau)
    stored = memory.scores[c, slot].detach()
    loss = alpha * (sim * stored * valid.to(sim.dtype)).sum() / (valid.sum() + 1)
    n_cos = torch.where(valid, sim.detach(), torch.zeros_like(sim))
    return loss, n_cos


NICE_VARIANTS = {
    "standalone": (None, 1e-5),  # NDI.py: threshold τ (the memory's, 0.05), eps 1e-5
    "training": (0.001, 1e-6),   # model_builder.py: `flag[value<0.001]=0`, bce eps 1e-6
}


def nice_params(variant: str, tau: float = 0.05) -> tuple[float, float]:
    """``(threshold, eps)`` of NICE ``variant`` (``"standalone"`` uses ``tau``); ValueError otherwise."""
    if variant not in NICE_VARIANTS:
        raise ValueError(f"nice_variant: expected 'standalone' (NDI.py: v >= tau, eps 1e-5) or 'training' "
                         f"(model_builder.py: v >= 0.001, eps 1e-6), found {variant!r}")
    threshold, eps = NICE_VARIANTS[variant]
    return (float(tau) if threshold is None else threshold), eps


def nice_loss(scores: torch.Tensor, image_labels: torch.Tensor, tau: float = 0.05, eps: float = 1e-5) -> torch.Tensor:
    """Negative-instance classification loss on ``(R, C)`` MIL or ``(R, C+1)`` refinement scores.

    ``tau``: proposals with top score below it are skipped; ``eps`` inside the log. The defaults are
    the standalone ``NDI.py`` values; :func:`nice_params` gives those of the official training path.
    """
    labels = image_labels.to(scores.device)
    v, idx = scores.max(dim=1)
    flag = torch.ones_like(v, dtype=torch.bool)
    if scores.shape[1] == labels.shape[0] + 1:
        flag &= idx != 0
        idx = (idx - 1).clamp(min=0)
    flag &= labels[idx] <= 0
    flag &= v >= tau
    if scores.shape[0] == 0 or not bool(flag.any()):
        return scores.sum() * 0.0
    return -(flag.to(v.dtype) * torch.log(1 - v + eps)).sum() / flag.numel()
