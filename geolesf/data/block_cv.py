"""Spatial block K-fold cross-validation splits for per-pixel classification.

The scene is cut into ``block_size`` squares (the grid of :func:`geolesf.data.splits.disjoint_split`).
Blocks holding labelled pixels are dealt to ``k`` folds so that the folds hold about as many labelled
pixels each: blocks in a seeded random order, sorted by labelled pixels (largest first, stable), each
to the fold with the fewest labelled pixels so far. Fold ``f`` tests on every labelled pixel of its
blocks and trains on the labelled pixels of the other blocks *farther than* ``buffer`` (Chebyshev
distance) from every test pixel — so every labelled pixel is tested exactly once over the folds, and
with ``buffer >= patch_size // 2`` no test patch sees a training pixel (leakage 0, which
:func:`geolesf.data.splits.leakage_report` measures per fold). Unlike the disjoint split, the buffer
removes *training* pixels, not test pixels: the folds' test sets then partition the labelled pixels.
"""

from __future__ import annotations

import numpy as np

from geolesf.data.splits import Split, _check_labels, _dilate
from geolesf.errors import DataError


def block_ids(shape: tuple[int, int], block_size: int) -> np.ndarray:
    """``(H, W)`` index of the ``block_size`` square holding each pixel (row-major over blocks)."""
    if block_size < 1:
        raise DataError(f"block cross-validation: block_size must be ≥ 1, found {block_size}")
    rows, cols = np.indices(shape)
    nbx = -(-shape[1] // block_size)
    return (rows // block_size) * nbx + cols // block_size


def assign_folds(labels: np.ndarray, k: int, block_size: int, seed: int = 0) -> np.ndarray:
    """Fold of every block (``-1`` for blocks without labelled pixels), balanced by labelled pixels."""
    labels = _check_labels(labels)
    if k < 2:
        raise DataError(f"block cross-validation needs at least 2 folds, found {k}")
    block = block_ids(labels.shape, block_size)
    counts = np.bincount(block[labels > 0], minlength=int(block.max()) + 1)
    occupied = np.flatnonzero(counts)
    if occupied.size < k:
        raise DataError(f"block cross-validation: {k} folds need at least {k} blocks with labelled pixels; "
                        f"{block_size}-pixel blocks give {occupied.size} (lower data.block_size or the folds)")
    order = np.random.default_rng(seed).permutation(occupied)
    order = order[np.argsort(-counts[order], kind="stable")]
    fold_of = np.full(counts.size, -1, dtype=np.int64)
    load = np.zeros(k, dtype=np.int64)
    for b in order:
        f = int(np.argmin(load))
        fold_of[b] = f
        load[f] += counts[b]
    return fold_of


def block_cv_split(labels: np.ndarray, k: int, fold: int, block_size: int = 10, buffer: int = 3,
                   seed: int = 0) -> Split:
    """Fold ``fold`` of ``k``: its blocks' labelled pixels to test, the rest beyond ``buffer`` to train."""
    labels = _check_labels(labels)
    if not 0 <= fold < k:
        raise DataError(f"block cross-validation: fold must be within 0..{k - 1}, found {fold}")
    if buffer < 0:
        raise DataError(f"block cross-validation: buffer must be ≥ 0, found {buffer}")
    fold_of = assign_folds(labels, k, block_size, seed)
    block = block_ids(labels.shape, block_size)
    lab = labels > 0
    test = lab & (fold_of[block] == fold)
    others = lab & ~test
    train = others & ~_dilate(test, buffer)
    params = {"folds": k, "fold": fold, "block_size": block_size, "buffer": buffer, "seed": seed,
              "blocks": int(np.count_nonzero(fold_of == fold)),
              "train_pixels_dropped_by_buffer": int(np.count_nonzero(others & ~train))}
    return Split(train, test, "blocks", params)
