"""Weak labels from full masks: seeded points and scribbles, and their GeoPackage round trip (real SpaceNet crop)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from scipy import ndimage

from geolesf.errors import ConfigError, DataError
from geolesf.io.labels import burn_vector_labels
from geolesf.data.weak_labels import (
    UNLABELLED,
    burn_scribbles,
    points_from_mask,
    points_to_vector,
    scribbles_from_mask,
    scribbles_to_vector,
)


@pytest.fixture(scope="module")
def crop(shared_data):
    """A 300 × 300 crop of the SpaceNet sample with its footprints burnt: (mask uint8, crs, transform)."""
    image = shared_data / "spacenet_solaris" / "sample_geotiff.tif"
    with rasterio.open(image) as src:
        transform = src.window_transform(Window(300, 300, 300, 300))
        crs = src.crs
    burned = burn_vector_labels(shared_data / "spacenet_solaris" / "geotiff_labels.geojson", crs=crs,
                                transform=transform, shape=(300, 300))
    mask = np.where(burned.data == -1, 0, np.where(burned.data < 0, UNLABELLED, burned.data)).astype(np.uint8)
    assert {0, 1} <= set(np.unique(mask).tolist())
    return mask, crs, transform


def test_points_are_seeded_inside_their_class_and_counted(crop):
    mask = crop[0]
    a = points_from_mask(mask, per_class=25, seed=3)
    assert np.array_equal(a, points_from_mask(mask, per_class=25, seed=3))
    assert not np.array_equal(a, points_from_mask(mask, per_class=25, seed=4))
    lab = a != UNLABELLED
    assert np.all(a[lab] == mask[lab])  # a point carries the class of the mask under it
    assert [int((a == c).sum()) for c in (0, 1)] == [25, 25]
    # density: round(density · class pixels) points per class (share of pixels labelled).
    d = points_from_mask(mask, density=0.01, seed=0)
    for c in (0, 1):
        assert int((d == c).sum()) == max(1, round(0.01 * int((mask == c).sum())))
    # margin: every point at least 2 px inside its class region (erosion by 2 keeps it).
    m = points_from_mask(mask, per_class=40, seed=1, margin=2)
    for c in (0, 1):
        inner = ndimage.binary_erosion(mask == c, iterations=2, border_value=1)
        assert inner[m == c].all()


def test_points_bad_arguments():
    mask = np.zeros((4, 4), np.uint8)
    with pytest.raises(ConfigError, match="exactly one"):
        points_from_mask(mask, seed=0)
    with pytest.raises(ConfigError, match="density"):
        points_from_mask(mask, density=1.5)


def test_scribbles_follow_the_documented_procedure(crop):
    mask = crop[0]
    lines = scribbles_from_mask(mask, seed=0, erode=2, max_length=60, min_area=30)
    again = scribbles_from_mask(mask, seed=0, erode=2, max_length=60, min_area=30)
    assert len(lines) == len(again) and all(np.array_equal(p, q) for (_, p), (_, q) in zip(lines, again))
    assert {c for c, _ in lines} == {0, 1}
    n_components = ndimage.label(mask == 1, structure=np.ones((3, 3)))[0]
    big = [k for k in range(1, n_components.max() + 1) if (n_components == k).sum() >= 30]
    assert sum(c == 1 for c, _ in lines) >= len(big)  # at least one stroke per building of ≥ min_area px
    for c, path in lines:
        assert 2 <= len(path) <= 60
        steps = np.abs(np.diff(path, axis=0)).max(1)
        assert np.all(steps == 1)  # an 8-connected stroke of distinct pixels
        assert np.all(mask[path[:, 0], path[:, 1]] == c)  # inside its class
    # erode = 2: where the eroded component is not empty, strokes keep 2 px from every other pixel.
    raster = burn_scribbles(lines, mask.shape)
    for c in (0, 1):
        inner = ndimage.binary_erosion(mask == c, iterations=2, border_value=1)
        comps = ndimage.label(mask == c, structure=np.ones((3, 3)))[0]
        for k in np.unique(comps[(raster == c)]):
            if (inner & (comps == k)).any():
                assert inner[(raster == c) & (comps == k)].all()
    share = float((raster != UNLABELLED).mean())
    assert 0 < share < 0.05


def test_vector_round_trip_burns_points_as_pixels_and_lines_as_1px_strokes(crop, tmp_path):
    mask, crs, transform = crop
    pts = points_from_mask(mask, per_class=10, seed=0)
    path = points_to_vector(pts, tmp_path / "pts.gpkg", crs=crs, transform=transform,
                            class_names={0: "background", 1: "building"})
    b = burn_vector_labels(path, crs=crs, transform=transform, shape=mask.shape, field="class",
                           name_to_id={"background": 0, "building": 1})
    assert np.array_equal(np.where(b.data < 0, UNLABELLED, b.data), pts)
    lines = scribbles_from_mask(mask, seed=1, max_length=80)
    path = scribbles_to_vector(lines, tmp_path / "scribbles.gpkg", crs=crs, transform=transform)
    b = burn_vector_labels(path, crs=crs, transform=transform, shape=mask.shape, field="class")
    assert np.array_equal(np.where(b.data < 0, UNLABELLED, b.data), burn_scribbles(lines, mask.shape))
    with pytest.raises(DataError, match="GeoPackage"):
        points_to_vector(pts, tmp_path / "pts.shp", crs=crs, transform=transform)
    assert not list(tmp_path.glob("*.part*"))
