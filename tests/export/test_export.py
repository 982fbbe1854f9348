from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geolesf.cli.main import main
from geolesf.errors import DataError
from geolesf.export.vector import polygonize
from geolesf.io.qml import raster_qml, vector_qml

NAMES = ["water", "forest", "field"]
COLOURS = [(31, 120, 180), (51, 160, 44), (255, 255, 153)]


@pytest.fixture()
def class_map(shared_data: Path, tmp_path: Path) -> Path:
    """A class map of a crop of the real Landsat scene (EPSG:32618), nodata collar included."""
    from rasterio.windows import Window

    from geolesf.io.writers import write_class_map

    with rasterio.open(shared_data / "rasterio_landsat7" / "RGB.byte.tif") as src:
        win = Window(0, 0, 200, 150)
        band = src.read(1, window=win)
        crs, transform = src.crs, src.window_transform(win)
    classes = np.digitize(band, [1, 60, 90]).astype(np.uint8)  # 0 = nodata, 1..3 classes
    path = tmp_path / "landcover.tif"
    write_class_map(path, classes, {1: NAMES[0], 2: NAMES[1], 3: NAMES[2]},
                    {1: COLOURS[0], 2: COLOURS[1], 3: COLOURS[2]}, crs=crs, transform=transform, nodata=0)
    return path


def test_qml_is_well_formed():
    r = ET.fromstring(raster_qml([1, 2, 3], NAMES, COLOURS).split("\n", 1)[1])
    entries = r.findall("./pipe/rasterrenderer/colorPalette/paletteEntry")
    assert [e.get("label") for e in entries] == NAMES
    assert entries[0].get("color") == "#1f78b4" and r.find("./pipe/rasterrenderer").get("type") == "paletted"
    v = ET.fromstring(vector_qml([1, 2, 3], NAMES, COLOURS).split("\n", 1)[1])
    renderer = v.find("renderer-v2")
    assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "class_id"
    assert [c.get("label") for c in renderer.findall("./categories/category")] == NAMES
    assert len(renderer.findall("./symbols/symbol")) == 3


def test_export_gpkg_crs_fields_and_style(class_map, tmp_path):
    import geopandas as gpd

    gpkg = tmp_path / "polys.gpkg"
    res = polygonize(class_map, gpkg)
    gdf = gpd.read_file(gpkg, layer="polys")
    with rasterio.open(class_map) as src:
        assert gdf.crs == src.crs
        arr = src.read(1)
        px_area = abs(src.transform.a * src.transform.e)
    assert {"class_id", "class_name", "area_m2"} <= set(gdf.columns)
    assert set(gdf.class_id) == {1, 2, 3}
    assert dict(zip(gdf.class_id, gdf.class_name)) == {1: "water", 2: "forest", 3: "field"}
    # Polygons tile the valid pixels exactly.
    assert gdf.area_m2.sum() == pytest.approx((arr != 0).sum() * px_area, rel=1e-9)
    assert res.features == len(gdf)
    con = sqlite3.connect(gpkg)
    rows = con.execute("SELECT f_table_schema, f_table_name, f_geometry_column, useAsDefault, update_time, "
                       "styleQML FROM layer_styles").fetchall()
    kinds = dict(con.execute("SELECT table_name, data_type FROM gpkg_contents").fetchall())
    con.close()
    assert len(rows) == 1
    schema, table, geom, default, when, qml = rows[0]
    assert (schema, table, geom, default) == ("", "polys", "geom", 1)
    assert when.endswith("Z") and "T" in when
    ET.fromstring(qml.split("\n", 1)[1])
    assert kinds["layer_styles"] == "attributes"
    assert res.raster_qml == class_map.with_suffix(".qml") and res.qml == gpkg.with_suffix(".qml")
    assert res.qml.is_file() and res.raster_qml.is_file()


def test_cli_export_same_stem_keeps_both_styles(class_map, capsys):
    gpkg = class_map.with_suffix(".gpkg")
    assert main(["export", str(class_map), "--gpkg", str(gpkg)]) == 0
    out = capsys.readouterr().out
    assert "polygons" in out and gpkg.is_file()
    assert class_map.with_suffix(".qml").is_file()
    assert class_map.with_name("landcover.vector.qml").is_file()
    assert not list(class_map.parent.glob(".*"))


def test_export_bad_input(tmp_path):
    with pytest.raises(DataError, match="class map not found"):
        polygonize(tmp_path / "none.tif", tmp_path / "x.gpkg")
    assert not (tmp_path / "x.gpkg").exists()


def test_export_after_predict_keeps_the_predicted_style(tmp_path, capsys):
    """The style predict writes beside a whole-cube map is the one export would write: no --overwrite needed."""
    import scipy.io

    from geolesf.cli.main import main
    from geolesf.paths import embedded_data_root

    cube = scipy.io.loadmat(embedded_data_root() / "indian_pines" / "IP_200_M.mat")["data_M"][:6]
    scipy.io.savemat(tmp_path / "strip.mat", {"X": cube})
    out = tmp_path / "maps" / "strip.tif"
    assert main(["predict", str(tmp_path / "strip.mat"), "--checkpoint", "s2mamba:indian_pines_dase", "--out",
                 str(out), "--no-preview"]) == 0
    before = out.with_suffix(".qml").read_text()
    assert 'value="0"' not in before
    assert main(["export", str(out), "--gpkg", str(tmp_path / "maps" / "strip.gpkg")]) == 0
    assert out.with_suffix(".qml").read_text() == before
