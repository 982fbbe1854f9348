"""Supervision types: tags from masks / CSV / GeoPackage, points and scribbles, boxes → pseudo masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from geolesf.data.supervision import (
    boxes_from_vector,
    boxes_to_pseudo_mask,
    partial_cross_entropy,
    rasterize_sparse,
    read_tile_tags,
    tags_from_mask,
)
from geolesf.errors import DataError


def test_tags_from_mask_hand_case():
    mask = np.array([[1, 1, 2, 255], [1, 3, 3, 3]])
    assert tags_from_mask(mask, [1, 2, 3, 4]).tolist() == [1, 1, 1, 0]
    # 7 valid pixels: min_fraction 0.2 needs ⌈1.4⌉ = 2 pixels, so class 2 (1 px) drops out
    assert tags_from_mask(mask, [1, 2, 3, 4], min_fraction=0.2).tolist() == [1, 0, 1, 0]
    assert tags_from_mask(mask, [255], ignore_index=None).tolist() == [1]


def test_tile_tags_from_csv_both_layouts(tmp_path):
    names = ["building", "road", "water"]
    a = tmp_path / "a.csv"
    a.write_text("tile,classes\nt0,building;water\nt1,ROAD\nt2,\n")
    t = read_tile_tags(a, names)
    assert t.names == ["t0", "t1", "t2"]
    assert t.tags.tolist() == [[1, 0, 1], [0, 1, 0], [0, 0, 0]]
    b = tmp_path / "b.csv"
    b.write_text("tile,building,road,water\nt0,1,0,1\nt1,0,true,0\n")
    assert read_tile_tags(b, names).tags.tolist() == [[1, 0, 1], [0, 1, 0]]
    bad = tmp_path / "bad.csv"
    bad.write_text("tile,classes\nt0,forest\n")
    with pytest.raises(DataError, match="forest"):
        read_tile_tags(bad, names)


def _landsat(shared_data):
    import rasterio

    with rasterio.open(shared_data / "rasterio_landsat7" / "RGB.byte.tif") as src:
        return src.transform, src.crs, (src.height, src.width)


def test_tile_tags_from_geopackage(tmp_path, shared_data):
    import geopandas as gpd
    from shapely.geometry import box

    transform, crs, _ = _landsat(shared_data)
    x0, y0 = transform @ (0, 0)
    gdf = gpd.GeoDataFrame({"tile": ["a", "b"], "classes": ["water", "building|road"]},
                           geometry=[box(x0, y0 - 3000, x0 + 3000, y0), box(x0 + 3000, y0 - 3000, x0 + 6000, y0)],
                           crs=crs)
    path = tmp_path / "tags.gpkg"
    gdf.to_file(path, driver="GPKG")
    t = read_tile_tags(path, ["building", "road", "water"])
    assert t.tags.tolist() == [[0, 0, 1], [1, 1, 0]]
    assert len(t.geometry) == 2


def test_points_and_scribbles_rasterised_in_the_raster_crs(tmp_path, shared_data):
    import geopandas as gpd
    from shapely.geometry import LineString, Point

    transform, crs, shape = _landsat(shared_data)
    centre = lambda r, c: transform @ (c + 0.5, r + 0.5)  # noqa: E731
    pts = gpd.GeoDataFrame({"class": ["water", "road"]}, geometry=[Point(centre(10, 20)), Point(centre(100, 200))],
                           crs=crs).to_crs(4326)  # stored in another CRS: reprojected back
    path = tmp_path / "points.gpkg"
    pts.to_file(path, driver="GPKG")
    ids = {"water": 4, "road": 3}
    sparse = rasterize_sparse(path, shape=shape, transform=transform, crs=crs, kind="point", class_ids=ids)
    assert sparse.shape == shape and sparse.dtype == np.uint8
    assert sparse[10, 20] == 4 and sparse[100, 200] == 3
    assert (sparse != 255).sum() == 2
    lines = gpd.GeoDataFrame({"class": [2]}, geometry=[LineString([centre(50, 10), centre(50, 30)])], crs=crs)
    lpath = tmp_path / "scribbles.gpkg"
    lines.to_file(lpath, driver="GPKG")
    scr = rasterize_sparse(lpath, shape=shape, transform=transform, crs=crs, kind="scribble")
    assert (scr[50, 10:31] == 2).all() and (scr[40] == 255).all()
    wide = rasterize_sparse(lpath, shape=shape, transform=transform, crs=crs, kind="scribble", width_px=5)
    # a 5-px stroke along row 50 (centre y = 50.5) covers rows 48..52 and leaves rows ≤ 46 and ≥ 54 unlabelled
    assert (wide[48:53, 20] == 2).all() and (wide[:47, 20] == 255).all() and (wide[54:, 20] == 255).all()
    with pytest.raises(DataError, match="Point"):
        rasterize_sparse(lpath, shape=shape, transform=transform, crs=crs, kind="point")


def test_boxes_from_vector_and_pseudo_masks(tmp_path, shared_data):
    import geopandas as gpd
    from shapely.geometry import box

    transform, crs, _ = _landsat(shared_data)
    (xa, ya), (xb, yb) = transform @ (10, 20), transform @ (30, 60)
    gdf = gpd.GeoDataFrame({"class": ["building"]}, geometry=[box(xa, yb, xb, ya)], crs=crs)
    path = tmp_path / "boxes.gpkg"
    gdf.to_file(path, driver="GPKG")
    boxes, classes = boxes_from_vector(path, transform=transform, crs=crs, class_ids={"building": 2})
    assert np.allclose(boxes, [[10, 20, 30, 60]]) and classes.tolist() == [2]
    mask = boxes_to_pseudo_mask(np.array([[0, 0, 8, 8], [2, 2, 4, 4]]), [1, 2], (10, 10))
    assert mask[0, 0] == 1 and mask[3, 3] == 2 and mask[9, 9] == 0  # the small box stays on top
    assert (mask == 2).sum() == 4 and (mask == 1).sum() == 64 - 4
    ell = boxes_to_pseudo_mask(np.array([[0, 0, 10, 10]]), [5], (10, 10), fill="ellipse")
    # pixel centres (i + ½, j + ½) with ((x − 5)/5)² + ((y − 5)/5)² ≤ 1: per quadrant the offsets
    # {½, 1½, 2½, 3½, 4½} give 5 + 5 + 4 + 4 + 2 = 20 pixels → 80 in all
    assert ell[5, 5] == 5 and ell[0, 0] == 0 and (ell == 5).sum() == 80
    assert ell[0].tolist() == [0, 0, 0, 5, 5, 5, 5, 0, 0, 0]  # y = ½: (x − 5)² ≤ 25 − 20.25 → x ∈ {3½ … 6½}


def test_partial_cross_entropy_uses_labelled_pixels_only():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 4, 4)
    sparse = torch.full((1, 4, 4), 255)
    sparse[0, 1, 2], sparse[0, 3, 0] = 2, 0
    expect = F.cross_entropy(logits[0, :, [1, 3], [2, 0]].T, torch.tensor([2, 0]))
    assert partial_cross_entropy(logits, sparse).item() == pytest.approx(expect.item(), rel=1e-6)
    assert partial_cross_entropy(logits, torch.full((1, 4, 4), 255)).item() == 0.0
