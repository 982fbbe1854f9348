"""Maps as QGIS shows them: CRS-less rasters and their polygons share one extent (y = -row), and
probability rasters carry a single-band pseudocolour ``.qml``.

The QGIS checks run PyQGIS in ``/usr/bin/python3`` (python3-qgis) and are skipped where it is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio

REPO = Path(__file__).parents[2]
IP = REPO / "geolesf" / "embedded" / "indian_pines"
QGIS_PYTHON = "/usr/bin/python3"


def _has_qgis() -> bool:
    if not Path(QGIS_PYTHON).is_file():
        return False
    probe = subprocess.run([QGIS_PYTHON, "-c", "import qgis.core"], capture_output=True, timeout=120)
    return probe.returncode == 0


def _qgis(script: str) -> dict:
    """Run ``script`` under PyQGIS (offscreen); it prints one JSON line last."""
    prologue = ("import json, os\nfrom qgis.core import *\napp = QgsApplication([], False)\napp.initQgis()\n")
    epilogue = "\nos._exit(0)\n"  # QgsApplication.exitQgis() crashes headless; nothing needs saving
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    env.pop("PYTHONPATH", None)
    run = subprocess.run([QGIS_PYTHON, "-c", prologue + script + epilogue], capture_output=True, text=True,
                         timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def crsless_map(tmp_path_factory) -> Path:
    """The shipped S²Mamba checkpoint on a 24×20 crop of the Indian Pines .mat cube (no CRS)."""
    import scipy.io

    from geolesf.methods.hsi.inference import classify_cube

    folder = tmp_path_factory.mktemp("ip")
    cube = scipy.io.loadmat(IP / "IP_200_M.mat")["data_M"][:24, :20]
    scipy.io.savemat(folder / "crop.mat", {"data_M": cube})
    out = folder / "map.tif"
    classify_cube(str(folder / "crop.mat"), "s2mamba:indian_pines_dase", out, preview=False, progress=False)
    return out


def test_crsless_map_and_polygons_share_one_extent(crsless_map):
    from geolesf.export.vector import polygonize

    gpkg = polygonize(crsless_map, crsless_map.with_suffix(".gpkg")).gpkg
    with rasterio.open(crsless_map) as src:
        assert src.crs is None and tuple(src.transform)[:6] == (1, 0, 0, 0, -1, 0)
        bounds = tuple(src.bounds)
        assert (src.read(1) > 0).all()  # every pixel classified: the polygons cover the whole raster
    assert bounds == (0.0, -24.0, 20.0, 0.0)
    info = pyogrio.read_info(gpkg, layer=gpkg.stem)
    assert tuple(info["total_bounds"]) == bounds


def test_raster_without_geotransform_is_polygonised_where_qgis_draws_it(tmp_path):
    """A CRS-less GeoTIFF with no geotransform (GDAL: identity, y = +row) gets polygons at y = -row."""
    from rasterio.errors import NotGeoreferencedWarning

    from geolesf.export.vector import polygonize

    path = tmp_path / "plain.tif"
    arr = np.ones((6, 9), np.uint8)
    arr[:, :3] = 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", height=6, width=9, count=1, dtype="uint8") as dst:
            dst.write(arr, 1)
            dst.update_tags(CLASS_NAMES=json.dumps({"1": "a", "2": "b"}))
        with rasterio.open(path) as src:
            assert src.transform.is_identity  # GDAL's reading: y = +row
    gpkg = polygonize(path, tmp_path / "plain.gpkg").gpkg
    assert tuple(pyogrio.read_info(gpkg, layer="plain")["total_bounds"]) == (0.0, -6.0, 9.0, 0.0)


def test_probability_raster_gets_a_pseudocolour_qml(tmp_path, shared_data):
    from tests.checkpoints import seeded_unet_checkpoint

    from geolesf.predict.tiled import predict_raster

    scene = shared_data / "rasterio_landsat7" / "RGB.byte.tif"
    ckpt = seeded_unet_checkpoint(tmp_path / "unet.pt")
    from rasterio.windows import Window

    crop = tmp_path / "crop.tif"
    with rasterio.open(scene) as src:
        win = Window(200, 200, 96, 80)
        with rasterio.open(crop, "w", **(src.profile | {"height": 80, "width": 96,
                                                         "transform": src.window_transform(win)})) as dst:
            dst.write(src.read(window=win))
    out, probs = tmp_path / "map.tif", tmp_path / "probs.tif"
    predict_raster(crop, ckpt, out, tile=64, overlap=16, progress=False, probabilities=probs,
                   probabilities_dtype="uint8")
    qml = probs.with_suffix(".qml")
    root = ET.parse(qml).getroot()
    renderer = root.find("pipe/rasterrenderer")
    assert renderer.get("type") == "singlebandpseudocolor" and renderer.get("band") == "1"
    items = renderer.findall("rastershader/colorrampshader/item")
    assert [float(i.get("value")) for i in items] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert "p(water)" in items[0].get("label")
    with rasterio.open(probs) as src:
        assert src.descriptions == ("p(water)", "p(forest)", "p(field)", "p(urban)")
    assert ET.parse(out.with_suffix(".qml")).getroot().find("pipe/rasterrenderer").get("type") == "paletted"
    if _has_qgis():
        got = _qgis(f"""
lay = QgsRasterLayer({str(probs)!r}, "p")
_, ok = lay.loadNamedStyle({str(qml)!r})
r = lay.renderer()
dp = lay.dataProvider()
print(json.dumps({{"valid": lay.isValid(), "ok": ok, "type": r.type(), "band": r.band(),
                  "min": r.classificationMin(), "max": r.classificationMax(),
                  "names": [dp.generateBandName(b) for b in (1, 2)],
                  "scale": dp.bandScale(1), "float": dp.dataType(1) == Qgis.DataType.Float32}}))
""")
        assert got["valid"] and got["ok"] and got["type"] == "singlebandpseudocolor" and got["band"] == 1
        assert (got["min"], got["max"]) == (0.0, 1.0)
        # QGIS names the band by its description and reads the uint8 band scaled (1/254) as Float32,
        # so the style's 0..1 range is right for uint8 as for float32 probabilities
        assert got["names"][0].endswith("p(water)") and abs(got["scale"] - 1 / 254) < 1e-9 and got["float"]


def test_qgis_places_crsless_map_and_polygons_together(crsless_map):
    if not _has_qgis():
        pytest.skip("PyQGIS (python3-qgis for /usr/bin/python3) is not installed")
    from geolesf.export.vector import polygonize

    gpkg = polygonize(crsless_map, crsless_map.with_name("q.gpkg")).gpkg
    got = _qgis(f"""
r = QgsRasterLayer({str(crsless_map)!r}, "r")
v = QgsVectorLayer({str(gpkg) + "|layername=q"!r}, "v", "ogr")
e, f = r.extent(), v.extent()
print(json.dumps({{"r": [e.xMinimum(), e.yMinimum(), e.xMaximum(), e.yMaximum()],
                  "v": [f.xMinimum(), f.yMinimum(), f.xMaximum(), f.yMaximum()]}}))
""")
    assert got["r"] == got["v"] == [0.0, -24.0, 20.0, 0.0]
