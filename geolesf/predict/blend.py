"""Tile grids and overlap-blending windows for the tiled predictor.

A tile of side ``T`` on an axis of length ``n``: the fewest tiles whose spacing is at most
``S = T - overlap``, the first at 0, the last ending exactly at ``n``, spread evenly between
(no tile runs twice, no oversized overlap at the scene edge).

Each tile gets a separable weight window. Along a side that touches a neighbouring tile
(never along the scene border) the weight is:

* ``0`` on the outer ``margin`` pixels — the pixels whose receptive field reaches past the
  tile edge (zero padding, pooling grid) are discarded, not averaged in;
* a ramp from 0 to 1 across the next ``overlap - 2·margin`` pixels — ``cosine`` (Hann half
  window) or ``linear``;
* ``1`` in the core of the tile.

``none`` is the hard "keep the centre" rule: ``margin = overlap // 2`` and no ramp, so each
pixel comes from the tile whose centre is nearest. With these windows, a model whose
receptive-field radius is ``≤ margin`` gives a tiled result equal to its whole-scene result
(up to float rounding): every pixel with non-zero weight saw exactly its whole-scene context.
"""

from __future__ import annotations

import numpy as np

from geolesf.errors import ConfigError

BLEND_MODES = ("cosine", "linear", "none")


def default_margin(overlap: int, mode: str) -> int:
    """Pixels discarded at each interior tile edge: half the overlap for ``none``, a quarter otherwise."""
    return overlap // 2 if mode == "none" else overlap // 4


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the fewest tiles covering ``[0, n)`` with at least ``overlap`` px overlap.

    The first tile starts at 0 and the last ends exactly at ``n``; starts in between are spread
    evenly, so every overlap is between ``overlap`` and ``overlap + stride / (tiles - 1)``
    instead of one large overlap at the end (which would both waste work and enlarge the
    row band the streaming accumulator has to keep).
    """
    if n <= tile:
        return [0]
    stride = tile - overlap
    count = -(-(n - tile) // stride) + 1
    return [k * (n - tile) // (count - 1) for k in range(count)]


def ramp_1d(length: int, overlap: int, lead: bool, trail: bool, mode: str, margin: int) -> np.ndarray:
    """1-D weights of one tile side to side; ``lead``/``trail`` say whether a neighbour is there."""
    if mode not in BLEND_MODES:
        raise ConfigError(f"--blend must be one of {', '.join(BLEND_MODES)}, found '{mode}'")
    w = np.ones(length, dtype=np.float64)
    if overlap <= 0:
        return w.astype(np.float32)
    d = np.arange(length, dtype=np.float64)
    ramp_len = overlap - 2 * margin
    if mode == "none" or ramp_len <= 0:
        profile = (d >= margin).astype(np.float64)
    else:
        t = np.clip((d - margin + 0.5) / ramp_len, 0.0, 1.0)
        t[d < margin] = 0.0
        profile = 0.5 - 0.5 * np.cos(np.pi * t) if mode == "cosine" else t
    if lead:
        w = np.minimum(w, profile)
    if trail:
        w = np.minimum(w, profile[::-1])
    return w.astype(np.float32)


def check_geometry(tile: int, overlap: int, mode: str, margin: int | None) -> int:
    """Validate tile/overlap/blend and return the margin actually used."""
    if mode not in BLEND_MODES:
        raise ConfigError(f"--blend must be one of {', '.join(BLEND_MODES)}, found '{mode}'")
    if tile < 16:
        raise ConfigError(f"--tile must be at least 16 pixels, found {tile}")
    if overlap < 0 or 2 * overlap >= tile:
        raise ConfigError(f"--overlap must be in [0, tile/2) = [0, {tile // 2}), found {overlap}")
    m = default_margin(overlap, mode) if margin is None else int(margin)
    if m < 0 or (overlap and 2 * m > overlap):
        raise ConfigError(f"blend margin must be in [0, overlap/2] = [0, {overlap // 2}], found {m}")
    return m


class WindowCache:
    """2-D windows (outer products) memoised by tile shape and neighbour flags."""

    def __init__(self, overlap: int, mode: str, margin: int) -> None:
        self.overlap, self.mode, self.margin = overlap, mode, margin
        self._cache: dict[tuple[int, int, bool, bool, bool, bool], np.ndarray] = {}

    def __call__(self, h: int, w: int, top: bool, bottom: bool, left: bool, right: bool) -> np.ndarray:
        key = (h, w, top, bottom, left, right)
        if key not in self._cache:
            wy = ramp_1d(h, self.overlap, top, bottom, self.mode, self.margin)
            wx = ramp_1d(w, self.overlap, left, right, self.mode, self.margin)
            self._cache[key] = np.outer(wy, wx).astype(np.float32)
        return self._cache[key]
