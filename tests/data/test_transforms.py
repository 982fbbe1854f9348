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
    # every pixel, inside the mask or not, is scaled by the statistics of the masked pixels alone
    train = cube[mask].astype(np.float64)
    expected = (cube - train.mean(axis=0)) / train.std(axis=0)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
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
    # the same decomposition by hand: SVD of the centred training spectra
    train = cube[mask].reshape(-1, cube.shape[2]).astype(np.float64)
    centred = train - train.mean(axis=0)
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    assert pca.explained_variance_ratio == pytest.approx((sv[:10] ** 2).sum() / (sv ** 2).sum(), rel=1e-6)
    by_hand = (cube.reshape(-1, cube.shape[2]) - train.mean(axis=0)) @ vt[:10].T
    got = out.reshape(-1, 10)
    signs = np.sign((got * by_hand).sum(axis=0))  # components are defined up to sign
    np.testing.assert_allclose(got * signs, by_hand, rtol=1e-3, atol=1e-2)
    with pytest.raises(DataError, match="at most"):
        PCA(500).fit(cube, mask)
