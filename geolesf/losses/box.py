"""Box-supervised segmentation losses in the manner of BoxInst (Tian, Shen, Wang & Chen, CVPR 2021).

BoxInst trains a mask head from boxes alone with two terms:

* the **projection loss**: the max-projections of the predicted mask onto the x and y axes must match
  the projections of the box mask; dice form ``L_dice(a, t) = 1 − 2 Σ a·t / (Σ a² + Σ t²)``, summed
  over the two axes (:func:`dice_loss`, :func:`projection_loss`);
* the **pairwise loss**: neighbouring pixels of similar colour should get the same label. Edges join
  every pixel to its 8 neighbours at dilation 2 (a 3×3 kernel with dilation 2, as in BoxInst); their
  colour similarity is ``S = exp(−‖c_i − c_j‖ / θ)``; an edge counts when ``S ≥ τ`` and its centre
  pixel lies inside a box; ``L_pair = −mean log P(y_i = y_j)`` over those edges
  (:func:`pairwise_loss`). BoxInst uses θ = 2, τ = 0.3 on LAB colours.

Semantic setting (geolesf's adaptation, not in BoxInst, which segments instances):

* each box of class ``c`` constrains the class-``c`` probability map inside the box window; the window
  is the box itself, so the box's own projections are all ones — every row and every column of a
  tight box contains at least one pixel of its object. Pixels outside every box are background and
  are trained with cross-entropy by the caller (:func:`box_outside_target`);
* ``P(y_i = y_j) = Σ_c p_i,c · p_j,c`` over all classes (BoxInst's ``m_i m_j + (1 − m_i)(1 − m_j)``
  is the two-class case);
* resolution: BoxInst's losses see masks at stride 4; :func:`pool_for_projection` gives the projection term
  the same cells on a full-resolution map (at stride 1 a one-pixel outline meets every max-projection);
* training crops cut boxes: a box clipped in x loses its y-projection (a row's object pixels may lie
  outside the crop) and a box clipped in y loses its x-projection (:func:`boxes_in_window`);
* colour: BoxInst converts RGB to CIE LAB; geolesf images have any number of bands (panchromatic,
  multispectral), so the distance is the Euclidean distance of the per-band standardised values
  (z-scores over the scene) and θ is in those units (default 0.1, :data:`DEFAULT_THETA`).
"""

from __future__ import annotations

import numpy as np
import torch

#: Colour-similarity scale θ on z-scored bands (BoxInst: θ = 2 on LAB) and edge threshold τ (BoxInst: 0.3).
DEFAULT_THETA = 0.1
DEFAULT_TAU = 0.3
#: The 8 neighbour offsets (dy, dx) of a 3×3 kernel, scaled by the dilation.
_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def dice_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """BoxInst's dice loss ``1 − 2 Σ a·t / (Σ a² + Σ t² + eps)`` over the last dimension."""
    inter = (pred * target).sum(-1)
    union = (pred * pred).sum(-1) + (target * target).sum(-1) + eps
    return 1.0 - 2.0 * inter / union


def smooth_max(x: torch.Tensor, dim: int, alpha: float = 0.0) -> torch.Tensor:
    """The max along ``dim`` (``alpha = 0``, BoxInst), or the α-softmax ``Σ x·e^{αx} / Σ e^{αx}`` of Hsu et al.
    (NeurIPS 2019, box-tightness MIL) for ``alpha > 0``: every pixel of a row gets a gradient, weighted
    towards the largest values (→ the max as α → ∞, → the mean as α → 0)."""
    if alpha <= 0:
        return x.amax(dim)
    w = torch.softmax(alpha * x, dim)
    return (w * x).sum(dim)


def projection_loss(probs: torch.Tensor, boxes: torch.Tensor, reduction: str = "mean",
                    alpha: float = 0.0) -> torch.Tensor:
    """Projection loss of the boxes of one image.

    ``probs`` ``(K, H, W)`` class probabilities; ``boxes`` ``(N, 7)`` rows ``[k, c0, r0, c1, r1, use_x,
    use_y]``: channel ``k``, inclusive pixel column/row ranges, and whether the x-projection (max over
    rows, one value per column) and the y-projection (max over columns, one per row) apply. The box
    window's projections are all ones, so each term is ``dice_loss(max-projection, 1)``. Boxes with no
    usable projection do not count. ``reduction="mean"``: the mean over boxes (0 with a graph when
    none counts); ``"none"``: the ``(M,)`` per-box losses (to average over the boxes of a whole batch).
    ``alpha > 0`` replaces the max by the smooth :func:`smooth_max`.
    """
    terms = []
    for k, c0, r0, c1, r1, use_x, use_y in boxes.long().tolist():
        window = probs[k, r0:r1 + 1, c0:c1 + 1]
        if window.numel() == 0 or not (use_x or use_y):
            continue
        parts = []
        if use_x:
            px = smooth_max(window, 0, alpha)
            parts.append(dice_loss(px, torch.ones_like(px)))
        if use_y:
            py = smooth_max(window, 1, alpha)
            parts.append(dice_loss(py, torch.ones_like(py)))
        terms.append(torch.stack(parts).sum())
    if reduction == "none":
        return torch.stack(terms) if terms else probs.new_zeros(0)
    if not terms:
        return probs.sum() * 0.0
    return torch.stack(terms).mean()


def pool_for_projection(probs: torch.Tensor, rows: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """BoxInst's mask resolution: ``(K, H, W)`` probabilities average-pooled over ``stride × stride`` cells
    (edge cells over the pixels they hold) and the :func:`projection_loss` rows in cell units (a box covers
    every cell it touches). ``stride = 1``: unchanged."""
    if stride <= 1:
        return probs, rows
    pooled = torch.nn.functional.avg_pool2d(probs[None], stride, ceil_mode=True)[0]
    cells = rows.clone()
    cells[:, 1:5] = torch.div(rows[:, 1:5], stride, rounding_mode="floor")
    return pooled, cells


def _shift(x: torch.Tensor, dy: int, dx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x at p + (dy, dx), valid)``: values of the neighbour at offset (dy, dx), 0 and invalid off the edge."""
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    valid = torch.zeros(h, w, dtype=torch.bool, device=x.device)
    ys, yd = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h + min(-dy, 0))
    xs, xd = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    out[..., yd, xd] = x[..., ys, xs]
    valid[yd, xd] = True
    return out, valid


def colour_similarity(image: torch.Tensor, *, dilation: int = 2, theta: float = DEFAULT_THETA) -> torch.Tensor:
    """``(B, 8, H, W)`` similarity ``exp(−‖c_i − c_j‖₂ / θ)`` of each pixel to its 8 dilated neighbours
    (0 where the neighbour is off the image)."""
    sims = []
    for dy, dx in _OFFSETS:
        nb, valid = _shift(image, dy * dilation, dx * dilation)
        dist = (image - nb).pow(2).sum(1).sqrt()
        sims.append(torch.exp(-dist / theta) * valid)
    return torch.stack(sims, 1)


def pairwise_loss(log_probs: torch.Tensor, similarity: torch.Tensor, in_box: torch.Tensor, *, dilation: int = 2,
                  tau: float = DEFAULT_TAU) -> torch.Tensor:
    """BoxInst's pairwise term for semantic maps.

    ``log_probs`` ``(B, K, H, W)`` log-softmax; ``similarity`` ``(B, 8, H, W)`` from
    :func:`colour_similarity` (same dilation); ``in_box`` ``(B, H, W)`` bool, the centre pixels whose
    edges count. ``−log Σ_c p_i,c p_j,c`` is averaged over edges with ``S ≥ τ`` and centre in a box;
    0 (with a graph) when there are none.
    """
    losses, weights = [], []
    for n, (dy, dx) in enumerate(_OFFSETS):
        nb, _ = _shift(log_probs, dy * dilation, dx * dilation)
        log_same = torch.logsumexp(log_probs + nb, dim=1)  # log Σ_c p_i,c p_j,c
        weight = ((similarity[:, n] >= tau) & in_box).to(log_probs.dtype)
        losses.append(-log_same * weight)
        weights.append(weight)
    total = torch.stack(weights).sum()
    if total.item() == 0:
        return log_probs.sum() * 0.0
    return torch.stack(losses).sum() / total


def pixel_ranges(boxes: np.ndarray) -> np.ndarray:
    """``(N, 4)`` float pixel-edge boxes ``[x0, y0, x1, y1]`` → inclusive integer ``[c0, r0, c1, r1]``: the
    pixels whose centre lies inside (at least the pixel holding the box centre for a sub-pixel box)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    c0, r0 = np.ceil(b[:, 0] - 0.5), np.ceil(b[:, 1] - 0.5)
    c1, r1 = np.floor(b[:, 2] - 0.5), np.floor(b[:, 3] - 0.5)
    cx, cy = np.floor((b[:, 0] + b[:, 2]) / 2), np.floor((b[:, 1] + b[:, 3]) / 2)
    c0, c1 = np.where(c1 < c0, cx, c0), np.where(c1 < c0, cx, c1)
    r0, r1 = np.where(r1 < r0, cy, r0), np.where(r1 < r0, cy, r1)
    return np.stack([c0, r0, c1, r1], 1).astype(np.int64)


def boxes_in_window(ranges: np.ndarray, channels: np.ndarray, row: int, col: int, size_y: int,
                    size_x: int) -> np.ndarray:
    """Scene boxes (inclusive pixel ranges, model channels) → ``(M, 7)`` rows for :func:`projection_loss`
    in the crop at ``(row, col)`` of ``size_y × size_x``; boxes outside the crop are dropped, cut ones
    lose the projection the cut makes unreliable (clipped in x → no y-projection, clipped in y → no
    x-projection)."""
    r = np.asarray(ranges, dtype=np.int64).reshape(-1, 4)
    c0, r0, c1, r1 = r[:, 0] - col, r[:, 1] - row, r[:, 2] - col, r[:, 3] - row
    keep = (c1 >= 0) & (r1 >= 0) & (c0 < size_x) & (r0 < size_y)
    cut_x = (c0 < 0) | (c1 >= size_x)
    cut_y = (r0 < 0) | (r1 >= size_y)
    rows = np.stack([np.asarray(channels, dtype=np.int64).reshape(-1), np.clip(c0, 0, size_x - 1),
                     np.clip(r0, 0, size_y - 1), np.clip(c1, 0, size_x - 1), np.clip(r1, 0, size_y - 1),
                     ~cut_y, ~cut_x], 1)
    return rows[keep].astype(np.int64)


def box_cover(ranges: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` bool: pixels inside at least one box."""
    out = np.zeros(shape, dtype=bool)
    for c0, r0, c1, r1 in np.asarray(ranges, dtype=np.int64).reshape(-1, 4):
        out[max(r0, 0):r1 + 1, max(c0, 0):c1 + 1] = True
    return out


def box_outside_target(ranges: np.ndarray, shape: tuple[int, int], background: int,
                       ignore_index: int = -100) -> np.ndarray:
    """``(H, W)`` int64 cross-entropy target: ``background`` outside every box, ``ignore_index`` inside."""
    return np.where(box_cover(ranges, shape), ignore_index, background).astype(np.int64)
