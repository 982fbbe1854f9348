"""Class-map GeoTIFF and PNG preview writers: round trips and atomicity."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geolesf.colors import default_palette
from geolesf.io.hsi import HSICube, read_cube
from geolesf.io.writers import (
    read_class_names,
    write_class_map,
    write_cube_geotiff,
    write_preview_png,
)


@pytest.fixture()
def class_map():
    rng = np.random.default_rng(0)
    return rng.integers(0, 5, size=(40, 56)).astype(np.uint8)


def test_class_map_round_trip(tmp_path, class_map, shared_data):
    with rasterio.open(shared_data / "rasterio_landsat7" / "RGB.byte.tif") as src:
        crs, transform = src.crs, src.transform
    names = ["unlabelled", "water", "forest", "crop", "urban"]
    colors = default_palette(5)
    out = write_class_map(tmp_path / "sub" / "map.tif", class_map, names, colors, crs=crs,
                          transform=transform, nodata=0, tags={"model": "rf"})
    with rasterio.open(out) as src:
        assert src.crs == crs and src.transform == transform
        assert src.nodata == 0 and src.dtypes[0] == "uint8"
        assert src.profile["compress"] == "deflate" and src.profile["tiled"]
        assert np.array_equal(src.read(1), class_map)
        cmap = src.colormap(1)
        for v, rgb in enumerate(colors):
            assert cmap[v][:3] == rgb
        assert src.tags()["model"] == "rf"
        assert "1=water" in src.descriptions[0]
    assert read_class_names(out) == dict(enumerate(names))
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_class_map_without_crs_warns(tmp_path, class_map):
    with pytest.warns(UserWarning, match="no CRS"):
        out = write_class_map(tmp_path / "m.tif", class_map, {1: "a", 2: "b"})
    with rasterio.open(out) as src:
        assert src.crs is None
        assert set(src.colormap(1)) >= {0, 1, 2, 3, 4}


def test_atomic_write_leaves_old_file_on_failure(tmp_path, class_map):
    dest = tmp_path / "m.tif"
    dest.write_bytes(b"old")
    with pytest.raises(Exception):
        write_class_map(dest, class_map.astype(np.int32) + 300, ["x"])
    assert dest.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.tif"]


def test_preview_png(tmp_path, class_map):
    out = write_preview_png(tmp_path / "p.png", class_map, {i: f"c{i}" for i in range(5)}, title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_palette_distinct():
    pal = default_palette(30)
    assert len(set(pal)) == 30


def test_cube_geotiff_round_trip(tmp_path):
    data = np.arange(6 * 7 * 4, dtype=np.uint16).reshape(6, 7, 4)
    cube = HSICube(data=data, band_names=["a", "b", "c", "d"], wavelengths=[1.0, 2.0, 3.0, 4.5])
    out = write_cube_geotiff(tmp_path / "c.tif", cube, crs="EPSG:32616",
                             transform=from_origin(500000, 4000000, 20, 20))
    back = read_cube(out)
    assert np.array_equal(back.data, data)
    assert back.crs.to_epsg() == 32616 and back.transform.a == 20
    assert back.band_names == ["a", "b", "c", "d"] and back.wavelengths == [1.0, 2.0, 3.0, 4.5]


def test_class_map_writes_qgis_style_sidecar(tmp_path, class_map):
    import xml.etree.ElementTree as ET

    names = {0: "unlabelled", 1: "water", 2: "forest", 3: "crop", 4: "urban"}
    colors = {0: (0, 0, 0), 1: (0, 0, 255), 2: (0, 128, 0), 3: (255, 255, 0), 4: (255, 0, 0)}
    with pytest.warns(UserWarning, match="no CRS"):
        out = write_class_map(tmp_path / "map.tif", class_map, names, colors, nodata=0)
    entries = ET.parse(out.with_suffix(".qml")).getroot().findall(".//paletteEntry")
    # one legend entry per class, the nodata value left out, names and colours as given
    assert [(e.get("value"), e.get("label"), e.get("color")) for e in entries] == [
        ("1", "water", "#0000ff"), ("2", "forest", "#008000"), ("3", "crop", "#ffff00"), ("4", "urban", "#ff0000"),
    ]


def test_outputs_get_umask_permissions_not_private(tmp_path, class_map):
    import os

    umask = os.umask(0o022)
    try:
        with pytest.warns(UserWarning, match="no CRS"):
            out = write_class_map(tmp_path / "m.tif", class_map, {1: "a"})
    finally:
        os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o644
