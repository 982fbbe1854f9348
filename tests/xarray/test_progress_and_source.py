"""The accessor on a numpy-backed cube: a progress bar that moves (patch models run in row strips,
same pixels as the file predictor), ``progress=False`` silences it; ``to_qgis`` records the input file
and its acquisition time for the STAC Item."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr


@pytest.fixture(scope="module")
def cube_da():
    from geolesf.io.hsi import read_cube
    from geolesf.paths import embedded_data_root

    cube = read_cube(str(embedded_data_root() / "indian_pines" / "IP_200_M.mat"))
    crop = np.ascontiguousarray(cube.data[30:70, 50:72].transpose(2, 0, 1))  # (200, 40, 22)
    return xr.DataArray(crop, dims=("band", "y", "x"), coords={"y": np.arange(40), "x": np.arange(22)})


def test_numpy_patch_model_progress_and_pixels(cube_da, tmp_path, capsys):
    from geolesf.predict.tiled import predict_raster

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no CRS
        ref = predict_raster(cube_da, "s2mamba:indian_pines_dase", tmp_path / "ref.tif", tile=16, overlap=0,
                             progress=False)
        capsys.readouterr()
        out = cube_da.geolesf.predict(checkpoint="s2mamba:indian_pines_dase", progress=True)
        bar = capsys.readouterr().err
        quiet = cube_da.geolesf.predict(checkpoint="s2mamba:indian_pines_dase", progress=False)
        assert capsys.readouterr().err == ""
    with rasterio.open(ref.out) as src:
        np.testing.assert_array_equal(out.values, src.read(1))
    np.testing.assert_array_equal(quiet.values, out.values)
    # the bar counts the 40 rows from 0 to 40 (which intermediate states it redraws depends on speed)
    assert "0/40" in bar and "40/40" in bar and "row" in bar


def test_to_qgis_records_input_file_and_acquisition(shared_data, tmp_path):
    import rioxarray

    from tests.checkpoints import seeded_unet_checkpoint

    from rasterio.windows import Window

    scene = tmp_path / "dated.tif"
    with rasterio.open(shared_data / "rasterio_landsat7" / "RGB.byte.tif") as src:
        win = Window(300, 300, 64, 48)
        with rasterio.open(scene, "w", **(src.profile | {"height": 48, "width": 64,
                                                         "transform": src.window_transform(win)})) as dst:
            dst.write(src.read(window=win))
            dst.update_tags(TIFFTAG_DATETIME="2001:02:03 04:05:06")
    ckpt = seeded_unet_checkpoint(tmp_path / "unet.pt")
    da = rioxarray.open_rasterio(scene)
    classes = da.geolesf.predict(checkpoint=ckpt, tile=32, overlap=8, progress=False)
    assert classes.attrs["source"] == str(scene) and classes.attrs["acquired"] == "2001-02-03T04:05:06Z"
    written = classes.geolesf.to_qgis(tmp_path / "map.tif", gpkg=False, stac=True, progress=False)
    props = json.loads(Path(written["stac"]).read_text())["properties"]
    assert props["geolesf:source"] == str(scene)
    assert props["datetime"] == "2001-02-03T04:05:06Z" and props["geolesf:datetime_is"] == "acquisition"
