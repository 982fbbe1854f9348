"""Cross-tile NMS (an object cut by a tile border yields one box) and the box GeoPackage writer."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from rasterio.transform import from_origin

from geolesf.export.boxes import write_boxes_gpkg
from geolesf.predict.boxes import TileDetections, merge_tile_detections


def _split_object_tiles():
    # Scene 100 x 160; tile A covers columns 0..99, tile B columns 60..159 (40 px overlap).
    # The object spans columns 20..70: whole in A, cut by B's left border (B sees columns 60..70).
    a = TileDetections(0, 0, 100, 100, np.array([[20, 20, 70, 60]], float), np.array([0.6]), np.array([3]))
    b = TileDetections(0, 60, 100, 100, np.array([[60, 20, 70, 60], [120, 30, 150, 50]], float),
                       np.array([0.9, 0.7]), np.array([3, 3]))
    return [a, b]


def test_object_split_by_tile_border_yields_one_box():
    boxes, scores, labels = merge_tile_detections(_split_object_tiles(), 100, 160)
    # the complete box from tile A survives (not the higher-scoring fragment); the other object stays
    assert len(boxes) == 2
    np.testing.assert_array_equal(boxes[np.argsort(boxes[:, 0])], [[20, 20, 70, 60], [120, 30, 150, 50]])
    assert sorted(scores.tolist()) == [0.6, 0.7] and labels.tolist() == [3, 3]


def test_plain_iou_nms_would_keep_the_fragment():
    # IoU(fragment, whole) = 10/50 < 0.4: only the containment rule for truncated boxes removes it
    boxes, _, _ = merge_tile_detections(_split_object_tiles(), 100, 160, merge_ios=1.01)
    assert len(boxes) == 3


def test_other_classes_and_nested_boxes_within_one_tile_are_kept():
    t = TileDetections(0, 0, 100, 100, np.array([[20, 20, 70, 60], [30, 30, 40, 40], [20, 20, 70, 60]], float),
                       np.array([0.9, 0.8, 0.5]), np.array([1, 1, 2]))
    boxes, _, labels = merge_tile_detections([t], 100, 100)
    assert len(boxes) == 3 and sorted(labels.tolist()) == [1, 1, 2]


def test_write_boxes_gpkg_round_trip(tmp_path):
    import geopandas as gpd

    transform = from_origin(500000.0, 4000000.0, 2.0, 2.0)
    out = write_boxes_gpkg(tmp_path / "boxes.gpkg", np.array([[10, 20, 30, 40]]), np.array([0.75]), np.array([1]),
                           ["car", "ship"], crs="EPSG:32633", transform=transform)
    assert out.features == 1 and out.qml.exists()
    gdf = gpd.read_file(out.gpkg, layer=out.layer)
    assert gdf.crs.to_epsg() == 32633
    assert gdf["class_name"].tolist() == ["ship"] and gdf["class_id"].tolist() == [1]
    assert gdf["score"].tolist() == pytest.approx([0.75])
    assert gdf.total_bounds.tolist() == pytest.approx([500020.0, 3999920.0, 500060.0, 3999960.0])
    with sqlite3.connect(out.gpkg) as con:
        rows = con.execute("SELECT f_table_name, useAsDefault, styleQML FROM layer_styles").fetchall()
    assert rows[0][0] == out.layer and rows[0][1] == 1 and "categorizedSymbol" in rows[0][2]
    assert not list(tmp_path.glob(".*tmp*"))
    empty = write_boxes_gpkg(tmp_path / "none.gpkg", np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), ["car"],
                             crs="EPSG:32633", transform=transform)
    assert empty.features == 0 and len(gpd.read_file(empty.gpkg, layer="none")) == 0
