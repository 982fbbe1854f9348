"""Labels of an HSI run: vector labels on the cube's grid, separate test labels, block folds."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest

from geolesf.config import DataConfig
from geolesf.data.scene_labels import labels_split, scene_labels
from geolesf.errors import ConfigError, DataError
from geolesf.io.hsi import read_cube
from tests import scenes

ROWS, COLS = slice(40, 80), slice(8, 48)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("scene_labels")
    scenes.write_scene(d / "scene.tif", ROWS, COLS)
    scenes.write_scene(d / "plain.tif", ROWS, COLS, georef=False)
    full = scenes.ground_truth()
    train = np.where(full > 0, scenes.dase_mask(), 0)[ROWS, COLS]
    names = scenes.class_names()
    affine = scenes.transform(ROWS.start, COLS.start)
    scenes.polygons(train, affine, names=names).to_file(d / "train.gpkg")
    test = full[ROWS, COLS].copy()
    test[train > 0] = 0
    extra = gpd.GeoDataFrame({"class": ["Marsh"]}, geometry=[scenes.polygons(
        np.pad(np.ones((2, 2), np.int32), ((0, 38), (0, 38))), affine, to_crs=None).geometry[0]], crs=scenes.CRS)
    tests = scenes.polygons(test, affine, names=names)
    gpd.GeoDataFrame(
        {"class": list(tests["class"]) + ["Marsh"]},
        geometry=list(tests.geometry) + list(extra.to_crs("EPSG:4326").geometry), crs="EPSG:4326",
    ).to_file(d / "test.gpkg")
    return d, train, test


def test_vector_labels_with_test_polygons_and_an_unknown_class(files):
    d, train, test = files
    cube = read_cube(d / "scene.tif")
    data = DataConfig(labels=str(d / "train.gpkg"), label_field="class", test_labels=str(d / "test.gpkg"))
    got = scene_labels(data, cube, seed=0, patch_size=5)
    split = got.split
    assert split.name == "labels"
    assert np.array_equal(split.train, train > 0)
    marsh = np.zeros_like(test, dtype=bool)
    marsh[:2, :2] = True
    assert np.array_equal(split.test, (test > 0) & ~marsh & ~(train > 0))
    unknown = split.params["unknown_test_classes"]
    assert [e["name"] for e in unknown.values()] == ["Marsh"] and list(unknown.values())[0]["pixels"] == 4
    assert any("Marsh" in n and "left out of the test set" in n for n in got.notes)
    assert got.report["vector"]["field_kind"] == "names" and "test_vector" in got.report
    # The test pixels carry the training ids of their class names.
    names = scenes.class_names()
    lab = split.label_map(got.ground_truth.data)
    for cid in np.unique(test[split.test]):
        assert {got.class_names[int(i)] for i in np.unique(lab[split.test & (test == cid)])} == {names[int(cid)]}


def test_raster_test_labels_and_pixels_in_both(files):
    d, train, _ = files
    gt = scenes.ground_truth()[ROWS, COLS]
    split = labels_split(train, gt, "gt.tif")
    assert np.array_equal(split.train, train > 0) and np.array_equal(split.test, (gt > 0) & (train == 0))
    assert split.params["pixels_in_both"] == int((train > 0).sum())
    with pytest.raises(DataError, match="no labelled pixel"):
        labels_split(np.zeros_like(gt), gt, "gt.tif")


def test_vector_labels_need_a_georeferenced_cube_and_a_field(files):
    d, *_ = files
    with pytest.raises(DataError, match="has no CRS/georeferencing: vector labels train.gpkg cannot be placed"):
        scene_labels(DataConfig(labels=str(d / "train.gpkg"), label_field="class"), read_cube(d / "plain.tif"))
    with pytest.raises(ConfigError, match="data.label_field"):
        scene_labels(DataConfig(labels=str(d / "train.gpkg")), read_cube(d / "scene.tif"))
    with pytest.raises(DataError, match=r"class names \['Corn'.*not in data.class_names"):
        scene_labels(DataConfig(labels=str(d / "train.gpkg"), label_field="class", class_names={1: "Woods"}),
                     read_cube(d / "scene.tif"))


def test_cv_fold_and_its_conflicts(files):
    d, train, _ = files
    cube = read_cube(d / "scene.tif")
    data = DataConfig(labels=str(d / "train.gpkg"), label_field="class", cv_blocks=3, cv_fold=1, block_size=8)
    split = scene_labels(data, cube, seed=0, patch_size=5).split
    assert split.name == "blocks" and split.params["buffer"] == 2 and split.params["fold"] == 1
    assert not (split.test & ~(train > 0)).any()
    with pytest.raises(ConfigError, match="exclude each other"):
        scene_labels(DataConfig(labels=data.labels, label_field="class", cv_blocks=3, cv_fold=0,
                                test_labels=str(d / "test.gpkg")), cube)
    with pytest.raises(ConfigError, match="data.cv_fold"):
        scene_labels(DataConfig(labels=data.labels, label_field="class", cv_blocks=3), cube)


def test_points_with_integer_ids_named_by_the_config(files, tmp_path):
    from shapely.geometry import Point

    d, *_ = files
    t = scenes.transform(ROWS.start, COLS.start)
    cells = {(3, 4): 14, (20, 21): 14, (30, 5): 2, (31, 9): 2}
    pts = [Point(*(t @ (c + 0.5, r + 0.5))) for r, c in cells]
    gpd.GeoDataFrame({"id": list(cells.values())}, geometry=pts, crs=scenes.CRS).to_crs("EPSG:3857").to_file(
        tmp_path / "points.shp")
    data = DataConfig(labels=str(tmp_path / "points.shp"), label_field="id", class_names={2: "Corn-notill", 14: "Woods"},
                      split="count", per_class=1)
    got = scene_labels(data, read_cube(d / "scene.tif"))
    expected = np.zeros((40, 40), np.int32)
    for (r, c), k in cells.items():
        expected[r, c] = k
    assert np.array_equal(got.ground_truth.data, expected)
    assert got.report["vector"]["field_kind"] == "ids" and got.class_names == {}


def test_test_labels_must_match_the_training_labels(files, tmp_path):
    d, train, _ = files
    cube = read_cube(d / "scene.tif")
    ids = scenes.polygons(train, scenes.transform(ROWS.start, COLS.start))  # integer ids
    ids.to_file(tmp_path / "ids.gpkg")
    with pytest.raises(DataError, match="hold class names but the training labels .* hold ids"):
        scene_labels(DataConfig(labels=str(tmp_path / "ids.gpkg"), label_field="class",
                                test_labels=str(d / "test.gpkg")), cube)
    wrong = tmp_path / "small.tif"
    import rasterio

    with rasterio.open(wrong, "w", driver="GTiff", width=10, height=10, count=1, dtype="uint8") as dst:
        dst.write(np.ones((1, 10, 10), np.uint8))
    with pytest.raises(DataError, match="test labels .* must cover the same pixels"):
        scene_labels(DataConfig(labels=str(tmp_path / "ids.gpkg"), label_field="class", test_labels=str(wrong)), cube)
