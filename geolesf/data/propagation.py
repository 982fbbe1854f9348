"""Spread sparse labels (points, scribbles) over an image by the random walk of Grady (2006).

Follows L. Grady, "Random Walks for Image Segmentation", IEEE TPAMI 28(11), 2006: the image is a
graph of pixels joined to their 4 neighbours with the weights ::

    w_ij = exp(−β · ‖I_i − I_j‖² / ⟨‖I_m − I_n‖²⟩)

and the probability ``x_i^c`` that a random walker leaving unlabelled pixel ``i`` first reaches a seed of
class ``c`` is the solution of the combinatorial Dirichlet problem ::

    L_U X_U = −B X_M        (L = D − W the graph Laplacian; U unlabelled, M seeded pixels)

``X_M`` is the one-hot matrix of the seeds, ``B = L[U, M]``. The system is solved once for all classes
(one sparse LU factorisation, :func:`scipy.sparse.linalg.splu`). Pixels whose largest probability is at
least ``threshold`` take that class; the others stay unlabelled. The segmentation objectives use the
result as extra, down-weighted labels (:mod:`geolesf.methods.unet.sparse`); it is a plain function of an
image and a sparse label map, so other weak-label objectives can reuse it.

Deviations, documented: the paper scales ``β`` against intensities in [0, 1] (its free parameter); here
the squared band differences (summed over the bands) are divided by their mean over all neighbour pairs of
the image (the contrast normalisation of GrabCut, Rother et al. 2004), so one ``β`` fits any number of
bands and any radiometry. A small leak ``ε`` to a zero potential (``ε`` = 1e-8 × the mean weight) is added to
every unlabelled pixel's diagonal: it keeps the system definite where a region holds no seed (its
probabilities then fall towards 0, below any threshold, and it stays unlabelled) and changes nothing
measurable elsewhere. Pixels without image data (``valid`` False) are cut from the graph and stay
unlabelled.
"""

from __future__ import annotations

import numpy as np

from geolesf.errors import ConfigError

UNLABELLED = -100
"""Unlabelled value of the label maps in and out (the segmentation trainer's ignore index)."""


def _edges(image: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 4-neighbour pairs ``(i, j)`` (flat indices) inside ``valid`` and their squared band distance."""
    h, w = valid.shape
    idx = np.arange(h * w).reshape(h, w)
    ii, jj, dd = [], [], []
    for a, b in (((slice(None), slice(0, w - 1)), (slice(None), slice(1, w))),
                 ((slice(0, h - 1), slice(None)), (slice(1, h), slice(None)))):
        ok = valid[a] & valid[b]
        ii.append(idx[a][ok])
        jj.append(idx[b][ok])
        dd.append(((image[(slice(None), *a)] - image[(slice(None), *b)]) ** 2).sum(0)[ok])
    return np.concatenate(ii), np.concatenate(jj), np.concatenate(dd).astype(np.float64)


def random_walk_probabilities(image: np.ndarray, seeds: np.ndarray, num_classes: int, *, beta: float = 10.0,
                              valid: np.ndarray | None = None) -> np.ndarray:
    """``(K, H, W)`` probabilities that a walker from each pixel first reaches a seed of each class.

    ``image``: ``(bands, H, W)`` float; ``seeds``: ``(H, W)`` class index 0..K-1 or :data:`UNLABELLED`.
    Seeded pixels get their one-hot class; pixels outside ``valid`` get 0 everywhere.
    """
    from scipy import sparse
    from scipy.sparse.linalg import splu

    if image.ndim != 3 or image.shape[1:] != seeds.shape:
        raise ConfigError(f"random walk: image {image.shape} and seeds {seeds.shape} differ in size")
    if beta <= 0:
        raise ConfigError(f"random walk: beta must be positive, found {beta}")
    h, w = seeds.shape
    valid = np.ones((h, w), bool) if valid is None else valid.astype(bool)
    seeded = valid & (seeds != UNLABELLED)
    if seeded.any() and (seeds[seeded].min() < 0 or seeds[seeded].max() >= num_classes):
        raise ConfigError(f"random walk: seed classes must be in 0..{num_classes - 1}")
    out = np.zeros((num_classes, h, w))
    flat_seeds = seeds.ravel()
    m = np.flatnonzero(seeded.ravel())
    out.reshape(num_classes, -1)[flat_seeds[m], m] = 1.0
    u = np.flatnonzero((valid & ~seeded).ravel())
    if not m.size or not u.size:
        return out
    i, j, d = _edges(image.astype(np.float64), valid)
    wts = np.exp(-beta * d / max(float(d.mean()), 1e-12))
    n = h * w
    adj = sparse.coo_matrix((np.r_[wts, wts], (np.r_[i, j], np.r_[j, i])), shape=(n, n)).tocsr()
    lap = sparse.diags(np.asarray(adj.sum(1)).ravel()) - adj
    lap_u = lap[u][:, u] + sparse.identity(u.size) * (1e-8 * float(wts.mean()))
    rhs = -(lap[u][:, m] @ np.eye(num_classes)[flat_seeds[m]])
    x_u = splu(lap_u.tocsc()).solve(np.ascontiguousarray(rhs))
    out.reshape(num_classes, -1)[:, u] = np.clip(x_u, 0.0, 1.0).T
    return out


def propagate_labels(image: np.ndarray, seeds: np.ndarray, num_classes: int, *, beta: float = 10.0,
                     threshold: float = 0.8, valid: np.ndarray | None = None) -> np.ndarray:
    """Sparse labels spread by the random walk: ``(H, W)`` class index where the walk is confident.

    A pixel takes the class of its largest probability when that is ≥ ``threshold``; the rest, and every
    pixel outside ``valid``, are :data:`UNLABELLED`. Seeds keep their class.
    """
    if not 0 < threshold <= 1:
        raise ConfigError(f"random walk: threshold must be in (0, 1], found {threshold}")
    prob = random_walk_probabilities(image, seeds, num_classes, beta=beta, valid=valid)
    best = prob.argmax(0)
    return np.where(prob.max(0) >= threshold, best, UNLABELLED).astype(np.int64)
