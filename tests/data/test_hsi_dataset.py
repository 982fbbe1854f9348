"""HSIRasterDataset (torchgeo) on a real georeferenced raster, and PatchDataset patches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rasterio.transform import from_origin
from torchgeo.samplers import GridGeoSampler

from geolesf.data.hsi_dataset import HSIRasterDataset, PatchDataset, pad_cube
from geolesf.errors import DataError
from geolesf.io.hsi import read_cube
from geolesf.io.writers import write_cube_geotiff


@pytest.fixture(scope="module")
def ip_geotiff(shared_data, tmp_path_factory):
    """A 40×40×16 crop of Indian Pines written with a declared (made-up) UTM 16N frame, 20 m."""
    cube = read_cube(shared_data / "indian_pines" / "IP_200_M.mat")
    cube.data = cube.data[:40, :40, :16].copy()
    cube.band_names = cube.band_names[:16]
    folder = tmp_path_factory.mktemp("ipgeo")
    write_cube_geotiff(folder / "ip_crop.tif", cube, crs="EPSG:32616",
                       transform=from_origin(500000.0, 4500000.0, 20.0, 20.0))
    return folder, cube.data


def test_raster_dataset_grid_query(ip_geotiff):
    folder, data = ip_geotiff
    ds = HSIRasterDataset(folder)
    assert ds.crs.to_epsg() == 32616 and ds.res == (20.0, 20.0)
    sampler = GridGeoSampler(ds, size=16, stride=16)
    queries = list(sampler)
    assert len(queries) == 9  # 40 px scene, 16 px tiles: 2 full + 1 edge-aligned tile per axis
    sample = ds[queries[0]]
    assert sample["image"].shape == (16, 16, 16) and sample["image"].dtype == torch.float32
    # The first grid tile is the bottom-left corner of the scene: rows 24..40, cols 0..16.
    want = data[24:40, :16, :].transpose(2, 0, 1).astype(np.float32)
    assert np.array_equal(sample["image"].numpy(), want)
    # A geographic query: the top-left 16×16 pixels (x from the west edge, y down from the north).
    top_left = ds[500000.0:500320.0:20.0, 4499680.0:4500000.0:20.0]["image"].numpy()
    assert np.array_equal(top_left, data[:16, :16, :].transpose(2, 0, 1).astype(np.float32))


def test_raster_dataset_real_landsat(shared_data):
    ds = HSIRasterDataset(shared_data / "rasterio_landsat7" / "RGB.byte.tif",
                          band_names=("red", "green", "blue"), bands=("blue",))
    q = next(iter(GridGeoSampler(ds, size=64, stride=64)))
    assert ds[q]["image"].shape == (1, 64, 64)


def test_raster_dataset_needs_files(tmp_path):
    with pytest.raises(DataError, match="no GeoTIFF cube found"):
        HSIRasterDataset(tmp_path)


def test_patch_dataset_symmetric(shared_data):
    cube = read_cube(shared_data / "indian_pines" / "IP_200_M.mat").data[:30, :30, :8].astype(np.float32)
    pixels = [(0, 0), (29, 29), (10, 12)]
    ds = PatchDataset(cube, pixels, labels=[3, 0, 5], patch_size=7, padding="symmetric")
    x, y = ds[0]
    assert x.shape == (8, 7, 7) and x.dtype == torch.float32 and y == 3
    # symmetric: the pad repeats the edge (padded column i of the left pad = column p-i-1).
    ref = np.pad(cube, ((3, 3), (3, 3), (0, 0)), mode="symmetric")
    assert np.array_equal(x.numpy(), ref[0:7, 0:7].transpose(2, 0, 1))
    assert np.array_equal(x.numpy()[:, 2, 3], cube[0, 0]) and np.array_equal(x.numpy()[:, 3, 3], cube[0, 0])
    x2, _ = ds[2]
    assert np.array_equal(x2.numpy(), cube[7:14, 9:16].transpose(2, 0, 1))
    zero = PatchDataset(cube, pixels, patch_size=5, padding="zero")
    xz, yz = zero[0]
    assert yz == -1 and float(xz[:, 0, 0].abs().sum()) == 0.0
    refl = pad_cube(cube, 2, "reflect")
    assert np.array_equal(refl[2, 1], cube[0, 1])  # reflect does not repeat the edge


def test_patch_dataset_errors():
    cube = np.zeros((5, 5, 2), dtype=np.float32)
    with pytest.raises(DataError, match="positive odd number, found 4"):
        PatchDataset(cube, [(0, 0)], patch_size=4)
    with pytest.raises(DataError, match="unknown padding 'wrap'"):
        PatchDataset(cube, [(0, 0)], padding="wrap")
    with pytest.raises(DataError, match="outside"):
        PatchDataset(cube, [(5, 0)])


def test_from_mask_and_loader():
    cube = np.random.default_rng(0).random((12, 10, 3)).astype(np.float32)
    mask = np.zeros((12, 10), bool)
    mask[2, 3] = mask[7, 1] = True
    y = np.full((12, 10), -1)
    y[2, 3], y[7, 1] = 1, 2
    ds = PatchDataset.from_mask(cube, mask, y, patch_size=3)
    xb, yb = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert xb.shape == (2, 3, 3, 3) and yb.tolist() == [1, 2]
