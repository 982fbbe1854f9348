"""The ``.geolesf`` xarray accessor: equal to the file-based tiled predictor, georeferencing kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dask.array
import numpy as np
import pytest
import rasterio
import rioxarray
import torch

import geolesf  # noqa: F401  (registers the accessor)
from geolesf.errors import ConfigError, DataError
from geolesf.predict.model import as_predict_model
from geolesf.predict.tiled import predict_raster


def _unet(classes: int = 4, seed: int = 0):
    from geolesf.methods.unet.model import unet

    torch.manual_seed(seed)
    net = unet(in_chans=3, num_classes=classes, base=4, depth=2).eval()
    return as_predict_model(net, class_names=[f"c{i}" for i in range(classes)])


@pytest.fixture(scope="module")
def rgb(shared_data: Path) -> Path:
    path = shared_data / "rasterio_landsat7" / "RGB.byte.tif"
    assert path.is_file(), f"{path} missing from GEOLESF_DATA"
    return path


@pytest.fixture(scope="module")
def rgb_crop(rgb: Path, tmp_path_factory) -> Path:
    """A 70×90 crop of the real scene, with part of its nodata collar, as its own GeoTIFF."""
    da = rioxarray.open_rasterio(rgb).isel(y=slice(0, 70), x=slice(60, 150))
    out = tmp_path_factory.mktemp("xr") / "crop.tif"
    da.rio.to_raster(out)
    return out


def _read(path: Path) -> tuple[np.ndarray, rasterio.profiles.Profile]:
    with rasterio.open(path) as src:
        return src.read(), src.profile


def test_dense_dask_equals_file_predictor(rgb, tmp_path):
    pm = _unet()
    ref = predict_raster(rgb, pm, tmp_path / "ref.tif", tile=128, overlap=32, probabilities=tmp_path / "p.tif",
                         progress=False)
    da = rioxarray.open_rasterio(rgb, chunks={"y": 150, "x": 200})  # chunks ≠ tiles, irregular at the edge
    classes = da.geolesf.predict(pm, tile=128, overlap=32)
    assert isinstance(classes.data, dask.array.Array), "a dask input must give a lazy result"
    assert classes.chunks == (da.chunks[1], da.chunks[2])
    ids, prof = _read(ref.out)
    np.testing.assert_array_equal(classes.values, ids[0])
    assert (ids[0] == prof["nodata"]).any() and (ids[0] != prof["nodata"]).any()  # collar and data both present
    # georeferencing: CRS, transform, coordinates, nodata
    assert classes.rio.crs == da.rio.crs == prof["crs"]
    assert classes.rio.transform() == da.rio.transform() == prof["transform"]
    np.testing.assert_array_equal(classes.x.values, da.x.values)
    np.testing.assert_array_equal(classes.y.values, da.y.values)
    assert classes.rio.nodata == prof["nodata"]
    assert classes.attrs["weights_sha256"] == pm.sha256 and classes.attrs["tile"] == 128

    probs = da.geolesf.predict(pm, tile=128, overlap=32, probabilities=True)
    assert probs.dims == ("class", "y", "x") and list(probs["class"].values) == pm.class_names
    p_ref, _ = _read(tmp_path / "p.tif")
    p = probs.values
    np.testing.assert_array_equal(np.isnan(p), np.isnan(p_ref))
    np.testing.assert_allclose(p[~np.isnan(p)], p_ref[~np.isnan(p_ref)], rtol=0, atol=1e-6)
    assert probs.rio.transform() == prof["transform"] and np.isnan(probs.rio.nodata)


def test_numpy_input_logits_and_hard_blend(rgb_crop, tmp_path):
    pm = _unet(classes=3, seed=3)
    kw = dict(tile=32, overlap=12, blend="none", blend_on="logits")
    ref = predict_raster(rgb_crop, pm, tmp_path / "ref.tif", progress=False, **kw)
    da = rioxarray.open_rasterio(rgb_crop).load()
    out = da.geolesf.predict(pm, progress=False, **kw)
    assert isinstance(out.data, np.ndarray)
    np.testing.assert_array_equal(out.values, _read(ref.out)[0][0])


def test_pixel_model_chunks_smaller_than_halo(rgb_crop, tmp_path):
    from geolesf.registry import create_model

    torch.manual_seed(0)
    net = create_model("s2mamba", in_chans=3, num_classes=3, patch_size=5, dims=8, d_state=4).eval()
    pm = as_predict_model(net, kind="pixel", class_names=["a", "b", "c"])
    ref = predict_raster(rgb_crop, pm, tmp_path / "ref.tif", tile=32, overlap=0, progress=False, pixel_batch=512)
    da = rioxarray.open_rasterio(rgb_crop, chunks={"y": 17, "x": 2})
    out = da.geolesf.predict(pm, tile=32, overlap=0, pixel_batch=512)
    ids = _read(ref.out)[0][0]
    np.testing.assert_array_equal(out.values, ids)
    assert len(np.unique(ids)) > 1
    assert out.attrs["patch_size"] == 5 and out.attrs["overlap"] == 0


def test_checkpoint_by_path_and_model_name(rgb_crop, tmp_path):
    from geolesf.methods.unet.checkpoint import SegmentationCheckpoint
    from geolesf.methods.unet.checkpoint import save as save_segmentation_checkpoint
    from geolesf.methods.unet.model import unet

    torch.manual_seed(5)
    net = unet(in_chans=3, num_classes=2, base=4, depth=2)
    ck = tmp_path / "model.pt"
    save_segmentation_checkpoint(ck, SegmentationCheckpoint(
        model=net, model_name="unet", model_args={"in_chans": 3, "num_classes": 2, "base": 4, "depth": 2},
        band_mean=np.array([50.0, 60.0, 70.0]), band_std=np.array([40.0, 40.0, 40.0]), class_ids=[1, 2],
        class_names=["water", "land"], colors=["#0000ff", "#00aa00"]))
    ref = predict_raster(rgb_crop, ck, tmp_path / "ref.tif", tile=64, overlap=16, progress=False)
    da = rioxarray.open_rasterio(rgb_crop, chunks={"y": 40, "x": 40})
    out = da.geolesf.predict(model="unet", checkpoint=ck, tile=64, overlap=16)
    np.testing.assert_array_equal(out.values, _read(ref.out)[0][0])
    assert out.attrs["class_names"] == ["water", "land"] and out.rio.nodata == 0
    with pytest.raises(Exception, match="s2mamba"):
        da.geolesf.predict(model="s2mamba", checkpoint=ck)
    with pytest.raises(ConfigError, match="checkpoint="):
        da.geolesf.predict(model="unet")
    with pytest.raises(DataError, match="has 2 bands; model unet expects 3"):
        da.isel(band=[0, 1]).geolesf.predict(checkpoint=ck)


def test_dataset_accessor_stacks_variables(rgb_crop):
    pm = _unet(classes=2, seed=1)
    da = rioxarray.open_rasterio(rgb_crop, chunks={"y": 35, "x": 45})
    ds = da.to_dataset("band").rename({1: "red", 2: "green", 3: "blue"})  # drops the nodata attribute
    a = da.geolesf.predict(pm, tile=32, overlap=8).values
    b = ds.geolesf.predict(pm, tile=32, overlap=8, variables=["red", "green", "blue"], nodata=0)
    np.testing.assert_array_equal(a, b.values)
    assert b.rio.crs == da.rio.crs
    with pytest.raises(DataError, match="nir"):
        ds.geolesf.predict(pm, variables=["red", "nir"])


def test_to_qgis_round_trip(rgb, tmp_path):
    from geolesf.export.stac import validate_item

    pm = _unet(classes=3, seed=2)
    da = rioxarray.open_rasterio(rgb, chunks={"y": 256, "x": 300})
    classes = da.geolesf.predict(pm, tile=128, overlap=32)
    written = classes.geolesf.to_qgis(tmp_path / "landcover.tif", stac=True, progress=False)
    assert set(written) == {"tif", "qml", "gpkg", "stac"}
    with rasterio.open(written["tif"]) as src:
        assert src.crs == da.rio.crs and src.transform == da.rio.transform()
        assert src.nodata == classes.rio.nodata and src.dtypes[0] == "uint8"
        assert src.overviews(1), "a COG has overviews"
        np.testing.assert_array_equal(src.read(1), classes.values)
        assert src.tags()["weights_sha256"] == pm.sha256
        hex1 = classes.attrs["colors"][1]
        assert src.colormap(1)[1][:3] == tuple(int(hex1[i:i + 2], 16) for i in (1, 3, 5))
    assert "c1" in written["qml"].read_text()
    import geopandas as gpd

    gdf = gpd.read_file(written["gpkg"])
    assert len(gdf) > 0 and gdf.crs == da.rio.crs and set(gdf.class_name) <= {"c0", "c1", "c2"}
    assert len(validate_item(written["stac"])) == 3
    # refuses what it cannot write, leaving nothing behind
    with pytest.raises(DataError, match="class_ids"):
        da.isel(band=0).geolesf.to_qgis(tmp_path / "raw.tif")
    assert not (tmp_path / "raw.tif").exists()


def test_spectral_helpers_keep_georeferencing(rgb):
    da = rioxarray.open_rasterio(rgb, chunks={"y": 300, "x": 300})
    raw = da.values.astype(np.float64)
    nd = da.geolesf.normalized_difference(3, 1)
    assert isinstance(nd.data, dask.array.Array)
    assert nd.rio.crs == da.rio.crs and nd.rio.transform() == da.rio.transform()
    a, b = raw[2], raw[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        expect = np.where((a == 0) | (b == 0) | (a + b == 0), np.nan, (a - b) / (a + b))
    np.testing.assert_allclose(nd.values, expect, atol=1e-6, equal_nan=True)
    assert np.isnan(nd.values).any() and np.isnan(nd.rio.nodata)

    # wavelengths (Landsat 7 ETM+ band centres, nm, for bands 1-3 of this file)
    wl = da.assign_coords(wavelength=("band", [483.0, 560.0, 662.0]))
    assert wl.geolesf.sel_wavelength(650.0).band.values.tolist() == [3]
    assert wl.geolesf.sel_wavelength([480, 665]).band.values.tolist() == [1, 3]
    assert wl.geolesf.sel_wavelength(slice(500, 700)).band.values.tolist() == [2, 3]
    with pytest.raises(DataError, match="no band within"):
        wl.geolesf.sel_wavelength(900.0, tolerance=50)
    with pytest.raises(DataError, match="wavelength"):
        da.geolesf.sel_wavelength(500.0)
    ndwi = wl.geolesf.ndwi(green=560.0, nir=662.0)  # nearest bands 2 and 3
    np.testing.assert_allclose(ndwi.values, wl.geolesf.normalized_difference(2, 3).values, equal_nan=True)


def test_pca_matches_sklearn(rgb):
    from sklearn.decomposition import PCA

    da = rioxarray.open_rasterio(rgb, chunks={"y": 300, "x": 300})
    pcs = da.geolesf.pca(2, sample=10**7)
    assert pcs.dims == ("component", "y", "x") and pcs.rio.crs == da.rio.crs
    assert pcs.rio.transform() == da.rio.transform()
    x = da.values.reshape(3, -1).T.astype(np.float64)
    valid = (x != 0).all(1)
    ref = PCA(2).fit(x[valid])
    comps = np.asarray(pcs.attrs["components"])
    np.testing.assert_allclose(np.abs(comps), np.abs(ref.components_), atol=1e-6)
    np.testing.assert_allclose(pcs.attrs["explained_variance_ratio"], ref.explained_variance_ratio_, atol=1e-6)
    flat = pcs.values.reshape(2, -1).T
    assert np.isnan(flat[~valid]).all()
    np.testing.assert_allclose(np.abs(flat[valid]), np.abs(ref.transform(x[valid])), rtol=1e-4, atol=1e-2)


def test_import_registers_accessor_without_torch():
    code = ("import sys, geolesf\n"
            "assert 'xarray' not in sys.modules and 'numpy' not in sys.modules\n"
            "import xarray\n"
            "print(hasattr(xarray.DataArray, 'geolesf'), hasattr(xarray.Dataset, 'geolesf'), 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    assert out == ["True", "True", "False"]


def test_shipped_s2mamba_checkpoint_on_a_cube(tmp_path):
    """The registered S²Mamba weights (MODEL:TAG, normalisation from the checkpoint) on a real cube crop."""
    import warnings

    import xarray as xr

    from geolesf.io.hsi import read_cube
    from geolesf.paths import embedded_data_root

    cube = read_cube(str(embedded_data_root() / "indian_pines" / "IP_200_M.mat"))
    crop = np.ascontiguousarray(cube.data[40:52, 60:74].transpose(2, 0, 1))  # (200, 12, 14)
    da = xr.DataArray(crop, dims=("band", "y", "x"), coords={"y": np.arange(12), "x": np.arange(14)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no CRS: Indian Pines is not georeferenced
        ref = predict_raster(da, "s2mamba:indian_pines_dase", tmp_path / "ref.tif", tile=16, overlap=0,
                             progress=False)
        out = da.chunk({"y": 5, "x": 6}).geolesf.predict(model="s2mamba", checkpoint="s2mamba:indian_pines_dase",
                                                         tile=16, overlap=0)
        ids = out.values
    np.testing.assert_array_equal(ids, _read(ref.out)[0][0])
    assert len(np.unique(ids)) > 1 and out.attrs["patch_size"] == 7 and out.rio.crs is None
    np.testing.assert_array_equal(out.x.values, np.arange(14))


def test_accessor_survives_find_spec_probes():
    """dask and others call importlib.util.find_spec("xarray") before importing it; the accessor
    must still be registered when xarray is finally imported after ``import geolesf``."""
    import subprocess
    import sys

    code = ("import sys, importlib.util, geolesf\n"
            "assert 'xarray' not in sys.modules\n"
            "importlib.util.find_spec('xarray'); importlib.util.find_spec('xarray')\n"
            "import xarray\n"
            "assert hasattr(xarray.DataArray, 'geolesf') and hasattr(xarray.Dataset, 'geolesf')\n")
    subprocess.run([sys.executable, "-c", code], check=True)
