"""Gated CRF loss: a cross-pixel similarity prior for sparse (point / scribble) supervision.

Follows Obukhov, Georgoulis, Dai & Van Gool, "Gated CRF Loss for Weakly Supervised Semantic Image
Segmentation" (arXiv 1906.04651, 2019). The loss relaxes a Potts CRF energy over a local window and
is added to the partial cross-entropy on the labelled pixels::

    L_gCRF = 1/|S| · Σ_i Σ_{j ∈ Ω_r(i), j ≠ i}  m_i m_j · K_ij · (1 − Σ_c y_i^c y_j^c)

    K_ij = w · exp(− ‖p_i − p_j‖² / 2σ_xy² − ‖I_i − I_j‖² / 2σ_img²)

``y`` are the softmax probabilities, ``1 − y_i·y_j`` the probability that ``i`` and ``j`` take
different labels (Potts compatibility), ``K`` a bilateral kernel of pixel position ``p`` and image
value ``I``, ``m`` the gate (1 where the image has data; the paper's source/destination masks), and
``|S|`` the number of gated source pixels. Neighbours ``Ω_r(i)`` are the cells with ``dy² + dx² < r²``
(the offsets of :func:`geolesf.losses.affinity.neighbour_pairs`, the affinity machinery of the WSSS
method): each unordered pair is counted once and the sum doubled, which equals the ordered sum for the
symmetric kernel.

Deviations, documented: the paper's window is the square ``(2r+1)²`` minus its centre, here the
disc ``dy² + dx² < r²``; the paper computes the loss on down-scaled predictions, here on whatever
resolution the caller passes (the points objective pools by its ``scale`` option, default 1 = full);
the image features are the per-band standardised bands (z-scores), so ``σ_img`` is in band standard
deviations (the reference code uses RGB scaled to [0, 1]).
The image carries no gradient (the kernel is fixed per chip).
"""

from __future__ import annotations

from typing import Any

import torch

from geolesf.errors import ConfigError
from geolesf.losses.affinity import grid_offsets


def _window(t: torch.Tensor, dy: int, dx: int, h: int, w: int, moved: bool) -> torch.Tensor:
    """The cells ``i`` (``moved=False``) or their neighbours ``i + (dy, dx)`` of every pair at that offset."""
    x0, x1 = max(0, -dx), w - max(0, dx)
    if moved:
        return t[..., dy:h, x0 + dx:x1 + dx]
    return t[..., 0:h - dy, x0:x1]


def gated_crf_loss(probs: torch.Tensor, image: torch.Tensor, valid: Any = None, *, radius: float = 5.0,
                   sigma_xy: float = 6.0, sigma_img: float = 0.5, weight: float = 1.0) -> torch.Tensor:
    """The gated CRF loss of probabilities ``(B, K, H, W)`` on the image ``(B, bands, H, W)``.

    ``valid`` (``(B, H, W)`` bool, optional) is the gate: pairs with a pixel outside it contribute nothing.
    The pairs are visited one offset at a time (array slices, no gather), as :func:`neighbour_pairs` lists them.
    """
    if probs.shape[-2:] != image.shape[-2:] or probs.shape[0] != image.shape[0]:
        raise ConfigError(f"gated CRF: probabilities {tuple(probs.shape)} and image {tuple(image.shape)} "
                          "differ in batch or size")
    if sigma_xy <= 0 or sigma_img <= 0:
        raise ConfigError(f"gated CRF: sigma_xy and sigma_img must be positive, found {sigma_xy}, {sigma_img}")
    b, _, h, w = probs.shape
    img = image.detach().to(probs.dtype)
    gate = valid.bool() if valid is not None else torch.ones(b, h, w, dtype=torch.bool, device=probs.device)
    n_src = int(gate.sum())
    total = probs.sum() * 0.0
    if n_src == 0:
        return total
    for dy, dx in grid_offsets(radius):
        if dy >= h or abs(dx) >= w:
            continue
        src = [_window(t, dy, dx, h, w, False) for t in (img, gate, probs)]
        dst = [_window(t, dy, dx, h, w, True) for t in (img, gate, probs)]
        d_img = ((src[0] - dst[0]) ** 2).sum(1) / (2.0 * sigma_img**2)
        kern = weight * torch.exp(-(dy * dy + dx * dx) / (2.0 * sigma_xy**2) - d_img) * (src[1] & dst[1])
        disagree = 1.0 - (src[2] * dst[2]).sum(1)
        total = total + (kern * disagree).sum()
    return 2.0 * total / n_src
