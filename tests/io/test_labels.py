"""The shared vector-label burner on real ground truth (Indian Pines, in an assumed UTM georeference)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from shapely.geometry import Point, Polygon, box

from geolesf.errors import ConfigError, DataError
from geolesf.io.labels import CONFLICT, UNBURNT, burn_vector_labels, is_vector, rasterize_labels
from tests import scenes

ROWS, COLS = slice(20, 60), slice(60, 100)
SHAPE = (40, 40)


@pytest.fixture(scope="module")
def crop():
    return scenes.ground_truth()[ROWS, COLS]


def _grid():
    return {"crs": scenes.CRS, "transform": scenes.transform(ROWS.start, COLS.start), "shape": SHAPE}


def _save(gdf, tmp_path, name="labels.gpkg"):
    path = tmp_path / name
    gdf.to_file(path)
    return path


def _pixel_box(row, col, grow=0.0):
    """The footprint of a pixel of the crop (in the scene CRS), optionally grown by metres."""
    t = scenes.transform(ROWS.start, COLS.start)
    x0, y0 = t @ (col, row)
    return box(x0 - grow, y0 - scenes.PIXEL - grow, x0 + scenes.PIXEL + grow, y0 + grow)


def test_polygons_in_wgs84_with_names_land_on_their_pixels(crop, tmp_path):
    names = scenes.class_names()
    gdf = scenes.polygons(crop, scenes.transform(ROWS.start, COLS.start), to_crs="EPSG:4326", names=names)
    burned = burn_vector_labels(_save(gdf, tmp_path), field="class", **_grid())
    present = sorted({names[c] for c in np.unique(crop) if c > 0})
    assert burned.names == {i + 1: n for i, n in enumerate(present)}, "names → ids 1..N in sorted order"
    by_name = {n: i for i, n in burned.names.items()}
    expected = np.full(SHAPE, UNBURNT)
    for c in np.unique(crop[crop > 0]):
        expected[crop == c] = by_name[names[int(c)]]
    assert np.array_equal(burned.data, expected)
    r = burned.report
    assert r["reprojected_from"] == "EPSG:4326" and r["field_kind"] == "names" and r["overlap_pixels"] == 0
    assert any("reprojected from EPSG:4326" in line for line in burned.notes())


def test_integer_field_keeps_ids_and_names_can_come_from_a_mapping(crop, tmp_path):
    gdf = scenes.polygons(crop, scenes.transform(ROWS.start, COLS.start), to_crs=None)
    burned = burn_vector_labels(_save(gdf, tmp_path), field="class", **_grid())
    assert np.array_equal(np.where(burned.data > 0, burned.data, 0), crop)
    assert burned.names == {} and burned.report["field_kind"] == "ids" and "reprojected_from" not in burned.report
    named = scenes.polygons(crop, scenes.transform(ROWS.start, COLS.start), names=scenes.class_names())
    by_config = {n: i for i, n in scenes.class_names().items()}
    again = burn_vector_labels(_save(named, tmp_path, "named.gpkg"), field="class", name_to_id=by_config, **_grid())
    assert np.array_equal(np.where(again.data > 0, again.data, 0), crop), "config ids for names"


def test_points_burn_the_pixel_that_holds_them(tmp_path):
    t = scenes.transform(ROWS.start, COLS.start)
    cells = [(0, 0, 3), (5, 7, 1), (39, 39, 2), (12, 30, 3)]
    pts = [Point(*(t @ (c + 0.3, r + 0.8))) for r, c, _ in cells]
    gdf = gpd.GeoDataFrame({"class": [k for *_, k in cells]}, geometry=pts, crs=scenes.CRS).to_crs("EPSG:4326")
    burned = burn_vector_labels(_save(gdf, tmp_path, "points.geojson"), field="class", **_grid())
    expected = np.full(SHAPE, UNBURNT)
    for r, c, k in cells:
        expected[r, c] = k
    assert np.array_equal(burned.data, expected)


def test_all_touched_burns_pixels_a_polygon_only_touches(tmp_path):
    # A strip 4 m wide along a pixel row's top edge covers no pixel centre but touches 10 pixels
    # (and the pixels above the edge it touches).
    t = scenes.transform(ROWS.start, COLS.start)
    x0, y0 = t @ (5, 10)
    strip = box(x0 + 1, y0 - 4, x0 + 10 * scenes.PIXEL - 1, y0 - 0.5)
    path = _save(gpd.GeoDataFrame({"class": [4]}, geometry=[strip], crs=scenes.CRS), tmp_path)
    centre = burn_vector_labels(path, field="class", **_grid())
    touched = burn_vector_labels(path, field="class", all_touched=True, **_grid())
    assert (centre.data == 4).sum() == 0 and centre.report["classes_without_pixels"] == [4]
    assert (touched.data == 4).sum() == 10 and (touched.data[10, 5:15] == 4).all()
    assert any("burn no pixel" in line for line in centre.notes())


def test_overlapping_classes_are_left_unlabelled_and_counted(tmp_path):
    a = _pixel_box(10, 10).union(_pixel_box(12, 12)).envelope  # 3×3 pixels, rows/cols 10..12
    b = _pixel_box(12, 12).union(_pixel_box(14, 14)).envelope  # rows/cols 12..14: shares pixel (12, 12)
    same = _pixel_box(10, 10)  # class 1 again on top of class 1: harmless
    gdf = gpd.GeoDataFrame({"class": [1, 2, 1]}, geometry=[a, b, same], crs=scenes.CRS)
    burned = burn_vector_labels(_save(gdf, tmp_path), field="class", **_grid())
    assert burned.data[12, 12] == CONFLICT and burned.report["overlap_pixels"] == 1
    assert burned.report["pixels_per_class"] == {"1": 8, "2": 8}
    assert burned.data[10, 10] == 1 and burned.data[14, 14] == 2
    assert any("overlap rule" in line for line in burned.notes())
    # The segmentation task's GeoTIFF: overlaps are its nodata (255), the rest background.
    scene = scenes.write_scene(tmp_path / "scene.tif", ROWS, COLS)
    out = rasterize_labels(tmp_path / "labels.gpkg", scene, tmp_path / "labels.tif", field_name="class", background=0)
    with rasterio.open(out) as src:
        arr = src.read(1)
        assert src.nodata == 255 and src.crs == scenes.CRS
    assert arr[12, 12] == 255 and arr[10, 10] == 1 and arr[14, 14] == 2 and arr[0, 0] == 0


def test_outside_empty_invalid_and_classless_features_are_reported(tmp_path):
    far = _pixel_box(-100, -100)
    bowtie = Polygon([(0, 0), (1, 1), (1, 0), (0, 1)])  # self-intersecting: repaired
    t = scenes.transform(ROWS.start, COLS.start)
    x0, y0 = t @ (2, 2)
    bowtie = Polygon([(x0 + a * 60, y0 - b * 60) for a, b in bowtie.exterior.coords])
    gdf = gpd.GeoDataFrame({"class": ["Woods", "Corn", None, "Corn"]},
                           geometry=[far, bowtie, _pixel_box(20, 20), Polygon()], crs=scenes.CRS)
    burned = burn_vector_labels(_save(gdf, tmp_path), field="class", **_grid())
    r = burned.report
    assert (r["outside_scene"], r["empty_geometries"], r["features_without_class"], r["invalid_geometries_repaired"]) \
        == (1, 1, 1, 1)
    assert burned.names == {1: "Corn", 2: "Woods"} and r["classes_without_pixels"] == [2]
    assert (burned.data == 1).sum() > 0 and burned.data[20, 20] == UNBURNT
    notes = "\n".join(burned.notes())
    for text in ("outside the scene", "empty geometry", "without a value in 'class'", "repaired"):
        assert text in notes


def test_unknown_names_are_reported_against_a_mapping(tmp_path):
    gdf = gpd.GeoDataFrame({"class": ["Corn", "Marsh"]}, geometry=[_pixel_box(1, 1), _pixel_box(3, 3)], crs=scenes.CRS)
    burned = burn_vector_labels(_save(gdf, tmp_path), field="class", name_to_id={"Corn": 4, "Woods": 14}, **_grid())
    assert burned.report["new_names"] == ["Marsh"]
    assert burned.data[1, 1] == 4 and burned.data[3, 3] == 15 and burned.names == {4: "Corn", 15: "Marsh"}


def test_bad_inputs_are_one_clear_error(tmp_path):
    path = _save(gpd.GeoDataFrame({"kind": [1]}, geometry=[_pixel_box(1, 1)], crs=scenes.CRS), tmp_path)
    with pytest.raises(DataError, match="no CRS"):
        burn_vector_labels(path, field="kind", crs=None, transform=None, shape=SHAPE)
    with pytest.raises(ConfigError, match=r"no column 'class' \(columns: kind\)"):
        burn_vector_labels(path, field="class", **_grid())
    bad_ids = _save(gpd.GeoDataFrame({"kind": [300]}, geometry=[_pixel_box(1, 1)], crs=scenes.CRS), tmp_path, "b.gpkg")
    with pytest.raises(DataError, match="0..254"):
        burn_vector_labels(bad_ids, field="kind", **_grid())
    no_crs = tmp_path / "nocrs.shp"  # a shapefile without its .prj
    gpd.GeoDataFrame({"kind": [1]}, geometry=[_pixel_box(1, 1)], crs=None).to_file(no_crs)
    with pytest.raises(DataError, match="the vector file has no CRS"):
        burn_vector_labels(no_crs, field="kind", **_grid())
    with pytest.raises(DataError, match="not found"):
        burn_vector_labels(tmp_path / "missing.gpkg", field="kind", **_grid())
    (tmp_path / "junk.gpkg").write_text("not a geopackage")
    with pytest.raises(DataError, match="not a readable vector file"):
        burn_vector_labels(tmp_path / "junk.gpkg", field="kind", **_grid())
    assert is_vector("a/b.GPKG") and is_vector("x.shp") and not is_vector("x.tif") and not is_vector(None)
