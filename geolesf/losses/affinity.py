"""Pixel affinity for weakly supervised segmentation: from attention or embeddings, its loss, and its use.

Shared (layer 3): moved here from ``methods/wsss`` so that the dense segmenter's sparse-label
objectives (:mod:`geolesf.losses.gated_crf`) reuse the neighbour pairs.

* :func:`attention_affinity` — the Transformer's own affinity: patch-to-patch attention averaged
  over heads and the last ``layers`` blocks, made symmetric ``(A + Aᵀ)/2`` and row-normalised.
* :func:`embedding_affinity` — ``a_ij = exp(−‖e_i − e_j‖₁)`` between embeddings within ``radius``
  (AffinityNet form; symmetric by construction), row-normalised.
* :func:`feature_affinity` — ``max(0, cos(f_i, f_j))`` of backbone features within ``radius``, for
  refining the CAMs of plain CNN classifiers.
* :func:`neighbour_pairs` — the pairs ``(i, j)``, ``i < j``, whose grid distance is below ``radius``
  (AffinityNet's rule ``dy² + dx² < r²``; r = 5 on the stride-8 map, methods.md §8.2).
* :func:`adaptive_affinity_loss` — methods.md §8.2::

      L_AA = 1/|P⁺_fg| Σ w (−log a) + 1/|P⁺_bg| Σ w (−log a) + 2 · 1/|P⁻| Σ w (−log(1 − a))

  with the focal-style adaptive weights ``w = (1 − a)^γ`` on positive pairs and ``w = a^γ`` on
  negative pairs (γ = 2; the paper's exact adaptive rule is NOT FOUND, this is the spec's choice).
  Positive pairs share a pseudo label (both confident), negative pairs have different labels
  (both confident); ignore-labelled pixels take part in no pair. Label sets without a background
  class (``bg_index=None``) put every positive pair into the first term.
* :func:`random_walk` — refine class maps by propagating them ``iters`` times with the
  row-normalised affinity raised element-wise to ``beta`` (PSA / AFA style).

Deviation, documented: ``‖e_i − e_j‖₁`` is averaged over the embedding channels
(``reduction="mean"``, as AffinityNet's code does) so the affinity does not vanish for wide
embeddings; ``reduction="sum"`` gives the literal L1 norm.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from geolesf.errors import ConfigError

EPS = 1e-5


def row_normalise(a: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Divide each row of ``(…, N, N)`` by its sum (rows of zeros stay zero)."""
    return a / a.sum(-1, keepdim=True).clamp_min(eps)


def attention_affinity(attentions: Sequence[torch.Tensor], layers: int = 4, prefix_tokens: int = 1,
                       normalise: bool = True) -> torch.Tensor:
    """``(B, N, N)`` patch affinity from a list of ``(B, heads, T, T)`` attention maps.

    The last ``layers`` maps are averaged over heads and layers; the first ``prefix_tokens``
    tokens (class token) are dropped; the result is symmetrised and, with ``normalise``,
    row-normalised.
    """
    if not attentions:
        raise ConfigError("attention affinity needs a Transformer backbone (no attention maps were returned)")
    use = list(attentions)[-max(1, layers):]
    a = torch.stack([t.mean(1) for t in use]).mean(0)[:, prefix_tokens:, prefix_tokens:]
    a = 0.5 * (a + a.transpose(-1, -2))
    return row_normalise(a) if normalise else a


def grid_offsets(radius: float) -> list[tuple[int, int]]:
    """The offsets ``(dy, dx)`` of :func:`neighbour_pairs`: one per unordered pair (``dy > 0`` or ``dy = 0, dx > 0``)."""
    r = int(radius)
    offs = [(dy, dx) for dy in range(0, r + 1) for dx in range(-r, r + 1)
            if (dy > 0 or dx > 0) and dy * dy + dx * dx < radius * radius]
    return offs


def neighbour_pairs(h: int, w: int, radius: float,
                    device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices ``(i, j)`` of every unordered pair of grid cells with ``dy² + dx² < radius²``."""
    ii, jj = [], []
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    for dy, dx in grid_offsets(radius):
        y2, x2 = ys + dy, xs + dx
        ok = (y2 < h) & (x2 >= 0) & (x2 < w)
        ii.append((ys * w + xs)[ok])
        jj.append((y2 * w + x2)[ok])
    if not ii:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty
    return torch.cat(ii), torch.cat(jj)


def pair_distance(emb: torch.Tensor, i: torch.Tensor, j: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """``‖e_i − e_j‖₁`` (channel mean or sum) for embeddings ``(B, E, h, w)`` at flat pairs → ``(B, P)``."""
    flat = emb.flatten(2)
    d = (flat[:, :, i] - flat[:, :, j]).abs()
    if reduction == "mean":
        return d.mean(1)
    if reduction == "sum":
        return d.sum(1)
    raise ConfigError(f"affinity reduction must be 'mean' or 'sum', found '{reduction}'")


def pair_affinity(emb: torch.Tensor, i: torch.Tensor, j: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """``exp(−‖e_i − e_j‖₁)`` for embeddings ``(B, E, h, w)`` at flat pairs → ``(B, P)``."""
    return torch.exp(-pair_distance(emb, i, j, reduction))


def embedding_affinity(emb: torch.Tensor, radius: float = 5, reduction: str = "mean",
                       normalise: bool = True) -> torch.Tensor:
    """Dense ``(B, N, N)`` affinity between embeddings within ``radius`` (self-affinity 1 on the diagonal)."""
    b, _, h, w = emb.shape
    i, j = neighbour_pairs(h, w, radius, emb.device)
    a = torch.zeros(b, h * w, h * w, dtype=emb.dtype, device=emb.device)
    vals = pair_affinity(emb, i, j, reduction)
    a[:, i, j] = vals
    a[:, j, i] = vals
    a = a + torch.eye(h * w, dtype=emb.dtype, device=emb.device)
    return row_normalise(a) if normalise else a


def feature_affinity(feats: torch.Tensor, radius: float = 5, normalise: bool = True) -> torch.Tensor:
    """Dense ``(B, N, N)`` affinity ``max(0, cos(f_i, f_j))`` of backbone features within ``radius``.

    The semantic affinity used to refine plain CNN CAMs, which have no embedding head.
    """
    from torch.nn import functional as F

    b, _, h, w = feats.shape
    f = F.normalize(feats.flatten(2), dim=1)
    i, j = neighbour_pairs(h, w, radius, feats.device)
    vals = (f[:, :, i] * f[:, :, j]).sum(1).clamp_min(0)
    a = torch.zeros(b, h * w, h * w, dtype=feats.dtype, device=feats.device)
    a[:, i, j] = vals
    a[:, j, i] = vals
    a = a + torch.eye(h * w, dtype=feats.dtype, device=feats.device)
    return row_normalise(a) if normalise else a


def adaptive_affinity_loss(emb: torch.Tensor, labels: torch.Tensor, *, radius: float = 5, gamma: float = 2.0,
                           bg_index: int | None = 0, ignore_index: int = 255,
                           reduction: str = "mean") -> torch.Tensor:
    """The adaptive affinity loss of embeddings ``(B, E, h, w)`` against pseudo labels ``(B, h, w)``."""
    if labels.shape[-2:] != emb.shape[-2:]:
        raise ConfigError(f"affinity loss: labels {tuple(labels.shape[-2:])} and embeddings "
                          f"{tuple(emb.shape[-2:])} differ in size")
    h, w = emb.shape[-2:]
    i, j = neighbour_pairs(h, w, radius, emb.device)
    d = pair_distance(emb, i, j, reduction)
    a = torch.exp(-d)
    flat = labels.flatten(1)
    li, lj = flat[:, i], flat[:, j]
    valid = (li != ignore_index) & (lj != ignore_index)
    same = valid & (li == lj)
    neg = valid & (li != lj)
    pos_term = (1 - a) ** gamma * d  # −log a = d exactly
    neg_term = a**gamma * (-torch.log((-torch.expm1(-d)).clamp_min(EPS)))  # −log(1 − a)
    total = emb.sum() * 0.0
    if bg_index is None:
        groups = [same]
    else:
        groups = [same & (li != bg_index), same & (li == bg_index)]
    for g in groups:
        if g.any():
            total = total + pos_term[g].sum() / g.sum()
    if neg.any():
        total = total + 2.0 * neg_term[neg].sum() / neg.sum()
    return total


def random_walk(maps: torch.Tensor, transition: torch.Tensor, beta: float = 2.0, iters: int = 2) -> torch.Tensor:
    """Propagate ``(B, K, h, w)`` maps with a ``(B, N, N)`` affinity: ``M ← M · Tᵀ``, ``T = rownorm(A^β)``."""
    b, k, h, w = maps.shape
    t = row_normalise(transition.clamp_min(0) ** beta)
    flat = maps.flatten(2)
    for _ in range(iters):
        flat = flat @ t.transpose(-1, -2)
    return flat.reshape(b, k, h, w)
