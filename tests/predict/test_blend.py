from __future__ import annotations

import numpy as np
import pytest

from geolesf.errors import ConfigError
from geolesf.predict.blend import WindowCache, check_geometry, ramp_1d, tile_starts


@pytest.mark.parametrize("n", [1, 50, 64, 65, 100, 127, 128, 129, 300, 1000])
def test_tile_starts_cover_once(n):
    tile, overlap = 64, 16
    starts = tile_starts(n, tile, overlap)
    assert starts == sorted(set(starts)), "a tile would run twice"
    assert starts[0] == 0 and starts[-1] + min(tile, n) == n
    gaps = np.diff(starts)
    assert (gaps <= tile - overlap).all() and (gaps > 0).all()


@pytest.mark.parametrize("mode", ["cosine", "linear", "none"])
@pytest.mark.parametrize("n", [130, 257, 1000])
def test_weights_positive_everywhere_and_zero_in_margin(mode, n):
    tile, overlap = 64, 20
    margin = check_geometry(tile, overlap, mode, None)
    starts = tile_starts(n, tile, overlap)
    total = np.zeros(n)
    for k, s in enumerate(starts):
        w = ramp_1d(tile, overlap, k > 0, k + 1 < len(starts), mode, margin)
        if k > 0:
            assert (w[:margin] == 0).all()
        if k + 1 < len(starts):
            assert (w[tile - margin:] == 0).all()
        total[s:s + tile] += w
    assert (total > 0).all()


def test_cosine_window_is_symmetric_and_cached():
    cache = WindowCache(32, "cosine", 8)
    w = cache(64, 64, True, True, True, True)
    assert np.allclose(w, w[::-1, ::-1]) and w.max() == 1.0
    assert cache(64, 64, True, True, True, True) is w


@pytest.mark.parametrize("tile,overlap,mode", [(8, 0, "cosine"), (64, 32, "cosine"), (64, -1, "none"),
                                               (64, 8, "gauss")])
def test_bad_geometry(tile, overlap, mode):
    with pytest.raises(ConfigError):
        check_geometry(tile, overlap, mode, None)
