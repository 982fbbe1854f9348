"""Boxes and noisy masks derived from full masks (geolesf.data.weak_labels_box): seeded, documented, checked."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from geolesf.data.supervision import boxes_from_vector
from geolesf.data.weak_labels_box import (
    boxes_from_mask,
    components,
    noisy_from_mask,
    thing_mask,
    write_boxes_gpkg,
    write_noisy_tif,
)
from geolesf.errors import DataError
from tests.scenes import spacenet_footprint_mask


@pytest.fixture(scope="module")
def spacenet_mask(shared_data, tmp_path_factory):
    """The SpaceNet footprints burnt onto sample_geotiff.tif: (mask, crs, transform)."""
    return spacenet_footprint_mask(shared_data / "spacenet_solaris", tmp_path_factory.mktemp("sn"))


def _toy():
    m = np.zeros((12, 12), dtype=np.uint8)
    m[1:4, 1:5] = 1  # object A (class 1)
    m[6:11, 2:4] = 2  # object B (class 2)
    m[7:9, 7:11] = 1  # object C (class 1)
    m[0, 11] = 255  # unlabelled
    return m


def test_one_tight_box_per_component():
    got = boxes_from_mask(_toy(), seed=0)
    assert got.classes.tolist() == [1, 1, 2]
    assert got.boxes.tolist() == [[1, 1, 5, 4], [7, 7, 11, 9], [2, 6, 4, 11]]
    assert got.pixels.tolist() == [12, 8, 10]


def test_thing_mask_boxes_only_the_thing_classes_and_merges_the_rest():
    # a land-cover toy: 1 = road (stuff, one big component), 2 = building, 3 = grass (stuff), 4 = car, 0 = boundary
    m = np.ones((10, 10), dtype=np.uint8)
    m[:, 6:] = 3
    m[1:3, 1:3] = 2
    m[6:8, 7:9] = 2
    m[5, 2:4] = 4
    m[:, 5] = 0
    m[9, 9] = 255
    out, names = thing_mask(m, {4: "car", 2: "building"}, ignore_classes=(0,))
    assert names == {0: "other", 1: "car", 2: "building"}
    assert out.dtype == np.uint8
    assert (out[m == 4] == 1).all() and (out[m == 2] == 2).all()
    assert (out[(m == 1) | (m == 3)] == 0).all()  # road and grass merged into "other"
    assert (out[(m == 0) | (m == 255)] == 255).all()  # the boundary band and unlabelled pixels ignored
    got = boxes_from_mask(out, seed=0)
    assert got.classes.tolist() == [1, 2, 2]  # boxes around the car and the two buildings only
    assert got.boxes.tolist() == [[2, 5, 4, 6], [1, 1, 3, 3], [7, 6, 9, 8]]
    # the stuff classes got no box: without the merge the road and the grass are boxed, covering the whole mask
    stuff = boxes_from_mask(m, seed=0, background=None, ignore=255)
    assert {1, 3} <= set(stuff.classes.tolist())
    again, _ = thing_mask(m, {4: "car", 2: "building"}, ignore_classes=(0,))
    assert np.array_equal(out, again)
    with pytest.raises(DataError, match="both things and ignored"):
        thing_mask(m, {2: "building"}, ignore_classes=(2,))
    with pytest.raises(DataError, match="at least one"):
        thing_mask(m, {})


def test_boxes_contain_their_component_on_real_footprints(spacenet_mask):
    mask, _, _ = spacenet_mask
    comps = components(mask)
    got = boxes_from_mask(mask, seed=3)
    assert len(got.boxes) == len(comps) >= 30
    for (cls, comp), box, c in zip(comps, got.boxes, got.classes):
        rows, cols = np.nonzero(comp)
        assert c == cls == 1
        assert box[0] <= cols.min() and cols.max() + 1 <= box[2] and box[1] <= rows.min() and rows.max() + 1 <= box[3]
        # tight: every edge touches the component
        assert (box[0], box[2], box[1], box[3]) == (cols.min(), cols.max() + 1, rows.min(), rows.max() + 1)


def test_jitter_is_seeded_bounded_and_inside_the_image(spacenet_mask):
    mask, _, _ = spacenet_mask
    tight = boxes_from_mask(mask, seed=0).boxes
    a = boxes_from_mask(mask, seed=7, jitter=0.2).boxes
    assert np.array_equal(a, boxes_from_mask(mask, seed=7, jitter=0.2).boxes)  # same seed, same boxes
    assert not np.array_equal(a, boxes_from_mask(mask, seed=8, jitter=0.2).boxes)
    side = np.concatenate([tight[:, 2:] - tight[:, :2]] * 2, 1)[:, [0, 1, 2, 3]]
    assert (np.abs(a - tight) <= 0.2 * side + 1e-9).all()  # each edge moves by at most j · side
    h, w = mask.shape
    assert (a[:, [0, 1]] >= 0).all() and (a[:, 2] <= w).all() and (a[:, 3] <= h).all()
    assert ((a[:, 2] - a[:, 0]) >= 1).all() and ((a[:, 3] - a[:, 1]) >= 1).all()
    with pytest.raises(DataError, match="jitter"):
        boxes_from_mask(mask, seed=0, jitter=-1)


def test_box_geopackage_round_trips_through_the_box_reader(spacenet_mask, tmp_path):
    mask, crs, transform = spacenet_mask
    got = boxes_from_mask(mask, seed=1, jitter=0.1)
    path = write_boxes_gpkg(tmp_path / "boxes.gpkg", got, crs=crs, transform=transform, class_names={1: "building"})
    back, classes = boxes_from_vector(path, transform=transform, crs=crs)
    assert classes.tolist() == got.classes.tolist()
    assert np.allclose(back, got.boxes, atol=1e-6)
    import geopandas as gpd

    gdf = gpd.read_file(path)
    assert gdf.crs == crs and set(gdf["class_name"]) == {"building"}
    with pytest.raises(DataError, match="gpkg"):
        write_boxes_gpkg(tmp_path / "boxes.shp", got, crs=crs, transform=transform)


def test_noisy_mask_is_seeded_and_drops_and_relabels_the_asked_share():
    m = np.zeros((40, 40), dtype=np.uint8)
    for k in range(10):  # ten 3×3 objects of classes 1 and 2
        r, c = 2 + 4 * (k // 5) * 4, 2 + 7 * (k % 5)
        m[r:r + 3, c:c + 3] = 1 + k % 2
    m[39, :] = 255
    kwargs = dict(boundary_px=0, drop_share=0.3, wrong_class_share=0.2, spurious_share=0.0)
    noisy, rep = noisy_from_mask(m, seed=5, **kwargs)
    again, _ = noisy_from_mask(m, seed=5, **kwargs)
    assert np.array_equal(noisy, again)
    assert rep.objects == 10 and rep.dropped == 3 and rep.wrong_class == 2
    # exactly 3 objects vanished into background, 2 changed class, 5 kept: count them on the output
    fates = {"dropped": 0, "wrong": 0, "kept": 0}
    for cls, comp in components(m):
        vals = np.unique(noisy[comp])
        assert len(vals) == 1
        fates["dropped" if vals[0] == 0 else "kept" if vals[0] == cls else "wrong"] += 1
    assert fates == {"dropped": 3, "wrong": 2, "kept": 5}
    assert (noisy[39] == 255).all()  # unlabelled stays unlabelled
    assert rep.changed_share == pytest.approx((noisy != m)[m != 255].mean())


def test_boundary_noise_moves_only_pixels_within_k_of_an_edge(spacenet_mask):
    from scipy import ndimage

    mask, _, _ = spacenet_mask
    k = 2
    noisy, rep = noisy_from_mask(mask, seed=0, boundary_px=k, drop_share=0, wrong_class_share=0, spurious_share=0)
    assert rep.eroded + rep.dilated == rep.objects and rep.eroded > 0 and rep.dilated > 0
    changed = noisy != mask
    assert changed.any()
    square = np.ones((2 * k + 1, 2 * k + 1), dtype=bool)
    fg = mask == 1
    near_edge = ndimage.binary_dilation(fg, structure=square) & ~ndimage.binary_erosion(fg, structure=square)
    assert not (changed & ~near_edge).any()


def test_spurious_blobs_and_noisy_geotiff(spacenet_mask, tmp_path):
    mask, crs, transform = spacenet_mask
    noisy, rep = noisy_from_mask(mask, seed=2, boundary_px=0, drop_share=0, wrong_class_share=0,
                                 spurious_share=0.5, spurious_radius=(4, 4))
    assert rep.spurious == round(0.5 * rep.objects)
    added = (noisy == 1) & (mask == 0)
    assert added.any() and not ((noisy == 0) & (mask == 1)).any()
    out = write_noisy_tif(tmp_path / "noisy.tif", noisy, crs=crs, transform=transform, class_names={0: "other",
                                                                                                    1: "building"},
                          report=rep)
    with rasterio.open(out) as src:
        assert src.crs == crs and src.transform == transform and np.array_equal(src.read(1), noisy)
        assert "GEOLESF_NOISE" in src.tags()
    assert out.with_suffix(".qml").is_file() and "building" in out.with_suffix(".qml").read_text()
    with pytest.raises(DataError, match="drop_share"):
        noisy_from_mask(mask, seed=0, drop_share=1.5)
