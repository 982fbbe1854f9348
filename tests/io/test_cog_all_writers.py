"""Every GeoTIFF geolesf writes is a valid Cloud-Optimized GeoTIFF (``rio cogeo validate``).

One test per writer, on small crops of real shipped data: the whole-cube classifier (.mat), the
tiled predictor (class map + probabilities), ``write_class_map`` with and without CRS,
``write_cube_geotiff``, ``rasterize_labels`` (vector labels), ``DataArray.geolesf.to_qgis`` and
the WSSS pseudo-labels. A source scan keeps new writers on the same path.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

REPO = Path(__file__).parents[2]
EMBEDDED = REPO / "geolesf" / "embedded"
SPACENET = REPO / "tests" / "fixtures" / "spacenet_solaris"


def assert_cog(path: Path) -> None:
    valid, errors, warns = cog_validate(str(path), quiet=True)
    assert valid and not errors, f"{path.name}: {errors}"
    assert not warns, f"{path.name}: {warns}"


@pytest.fixture(scope="module")
def landsat_crop(shared_data: Path, tmp_path_factory) -> Path:
    """A 96×120 crop of the real Landsat 7 scene (EPSG:32618), written plainly (not a COG)."""
    from rasterio.windows import Window

    out = tmp_path_factory.mktemp("cog") / "crop.tif"
    with rasterio.open(shared_data / "rasterio_landsat7" / "RGB.byte.tif") as src:
        win = Window(40, 0, 120, 96)
        profile = src.profile | {"height": 96, "width": 120, "transform": src.window_transform(win)}
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read(window=win))
    return out


@pytest.fixture(scope="module")
def unet_ckpt(tmp_path_factory) -> Path:
    from tests.checkpoints import seeded_unet_checkpoint

    return seeded_unet_checkpoint(tmp_path_factory.mktemp("ck") / "unet.pt")


def test_whole_cube_classifier(tmp_path):
    """The .mat/ENVI path (``geolesf predict cube.mat``) on a 24×20 crop of the shipped Indian Pines cube."""
    import scipy.io

    from geolesf.methods.hsi.inference import classify_cube

    cube = scipy.io.loadmat(EMBEDDED / "indian_pines" / "IP_200_M.mat")["data_M"][:24, :20]
    scipy.io.savemat(tmp_path / "crop.mat", {"data_M": cube})
    out = tmp_path / "map.tif"
    res = classify_cube(str(tmp_path / "crop.mat"), "s2mamba:indian_pines_dase", out, preview=False,
                        progress=False)
    assert_cog(out)
    with rasterio.open(out) as src:
        np.testing.assert_array_equal(src.read(1), res.class_map)


def test_tiled_predictor_map_and_probabilities(landsat_crop, unet_ckpt, tmp_path):
    from geolesf.predict.tiled import predict_raster

    out, probs = tmp_path / "map.tif", tmp_path / "probs.tif"
    predict_raster(landsat_crop, unet_ckpt, out, tile=64, overlap=16, progress=False, probabilities=probs)
    assert_cog(out)
    assert_cog(probs)


@pytest.mark.parametrize("shape", [(5, 7), (145, 145), (700, 600)])
def test_write_class_map_without_crs(tmp_path, shape):
    from geolesf.io.writers import write_class_map

    arr = (np.arange(shape[0] * shape[1]).reshape(shape) % 4).astype(np.uint8)
    out = tmp_path / "m.tif"
    with pytest.warns(UserWarning, match="no CRS"):
        write_class_map(out, arr, ["a", "b", "c", "d"])
    assert_cog(out)
    with rasterio.open(out) as src:
        np.testing.assert_array_equal(src.read(1), arr)  # pixels unchanged
        assert src.colormap(1)[1][3] == 255 and src.nodata == 0
        assert src.overviews(1) == ([2] if min(shape) > 512 else [])


def test_write_class_map_with_crs_and_cube_geotiff(landsat_crop, tmp_path):
    from geolesf.io.hsi import read_cube
    from geolesf.io.writers import write_class_map, write_cube_geotiff

    with rasterio.open(landsat_crop) as src:
        crs, transform, band = src.crs, src.transform, src.read(1)
    out = tmp_path / "m.tif"
    write_class_map(out, (band // 64).astype(np.uint8), ["a", "b", "c", "d"], crs=crs, transform=transform)
    assert_cog(out)
    cube = read_cube(landsat_crop)
    cube_out = write_cube_geotiff(tmp_path / "cube.tif", cube)
    assert_cog(cube_out)
    with rasterio.open(cube_out) as dst:
        np.testing.assert_array_equal(dst.read(), np.asarray(cube.data).transpose(2, 0, 1))
        assert dst.crs == crs and dst.transform == transform


def test_rasterize_labels(tmp_path):
    from geolesf.io.labels import rasterize_labels

    out = tmp_path / "labels.tif"
    rasterize_labels(SPACENET / "geotiff_labels.geojson", SPACENET / "sample_geotiff.tif", out, field_name=None,
                     background=0)
    assert_cog(out)
    with rasterio.open(out) as src, rasterio.open(SPACENET / "sample_geotiff.tif") as img:
        assert src.transform == img.transform and src.crs == img.crs
        assert 0 < int((src.read(1) == 1).sum()) < src.width * src.height


def test_xarray_to_qgis(landsat_crop, unet_ckpt, tmp_path):
    import rioxarray

    da = rioxarray.open_rasterio(landsat_crop, chunks={"y": 64, "x": 64})
    classes = da.geolesf.predict(checkpoint=unet_ckpt, tile=64, overlap=16, progress=False)
    written = classes.geolesf.to_qgis(tmp_path / "landcover.tif", gpkg=False, progress=False)
    assert_cog(written["tif"])


@pytest.mark.shared_data("rs_seg_tiles")
def test_wsss_pseudo_labels(shared_data, landsat_crop, tmp_path):
    from geolesf.methods.wsss.pseudo_label import write_pseudo_labels
    from tests.checkpoints import tiny_wsss_checkpoint

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tiny_wsss_checkpoint(tmp_path / "run", shared_data / "rs_seg_tiles", max_steps=2, batch_size=4)
    out = tmp_path / "pseudo.tif"
    write_pseudo_labels(landsat_crop, model, out, tile=64, overlap=16, progress=False)
    assert_cog(out)
    with rasterio.open(out) as src:
        assert src.count == 2 and src.descriptions == ("pseudo_label", "confidence")


def test_no_geotiff_writer_outside_the_cog_path():
    """``rasterio.open(..., "w")`` appears only where the temporary GeoTIFF is later copied to a COG."""
    allowed = {"geolesf/io/cog.py", "geolesf/methods/wsss/pseudo_label.py"}
    found = set()
    for path in (REPO / "geolesf").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if re.search(r"rasterio\.open\([^)]*[\"']w[\"']", text):
            found.add(str(path.relative_to(REPO)))
    assert found == allowed
    assert "finalize_cog(" in (REPO / "geolesf/methods/wsss/pseudo_label.py").read_text()
