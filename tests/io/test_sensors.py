"""Sensor-product readers on fixtures in each product's documented layout (real Indian Pines pixels).

See ``tests/io/sensor_fixtures.py``: the fixtures are not real products (no EnMAP, DESIS, PRISMA or
AVIRIS file is on this machine); they follow the layouts cited in ``docs/sensors.md``.
"""

from __future__ import annotations

import numpy as np
import pytest

from geolesf.errors import DataError
from geolesf.io.hsi import read_cube
from geolesf.io.sensors import detect
from geolesf.io.lazy import open_cube
from tests.io import sensor_fixtures as fx


def _physical(dn: np.ndarray, scale: list[float], offset: list[float]) -> np.ndarray:
    return dn.astype(np.float32) * np.asarray(scale, np.float32) + np.asarray(offset, np.float32)


def _check(cube, want, sensor: str) -> None:
    assert cube.sensor == sensor
    assert cube.wavelengths == want["wavelengths"]
    assert cube.fwhm == want["fwhm"]
    assert cube.nodata == want["nodata"]
    assert cube.crs.to_epsg() == want["crs"]
    assert cube.transform == want["transform"]
    assert cube.acquired == want["acquired"]
    assert cube.shape == (fx.ROWS, fx.COLS, len(want["wavelengths"]))
    invalid = want["invalid"]
    valid = np.ones(invalid.shape, bool) if cube.valid is None else cube.valid
    np.testing.assert_array_equal(~valid, invalid)
    assert np.all(cube.data[invalid] == np.float32(want["nodata"]))
    assert cube.quality["invalid_pixels"] == int(invalid.sum())


@pytest.mark.parametrize("given", ["folder", "xml", "image"])
def test_enmap_l2a(tmp_path, given):
    want = fx.enmap(tmp_path / "enmap")
    spec = {"folder": want["xml"].parent, "xml": want["xml"],
            "image": next(want["xml"].parent.glob("*-SPECTRAL_IMAGE.TIF"))}[given]
    assert detect(spec).name == "EnMAP L2A"
    cube = read_cube(spec)
    _check(cube, want, "EnMAP L2A")
    assert cube.scale == want["scale"] and cube.offset == want["offset"]
    assert cube.data.dtype == np.float32
    ok = ~want["invalid"]
    np.testing.assert_array_equal(cube.data[ok], _physical(want["dn"], want["scale"], want["offset"])[ok])
    # cloud and cloud shadow are masked, haze (everywhere in the fixture) is not
    assert {q["name"] for q in cube.quality["layers"]} == {"cloud", "cloud shadow"}
    assert cube.quality["flagged_by_quality_layers"] == 9 + 4


def test_desis_l2a(tmp_path):
    want = fx.desis(tmp_path / "desis")
    for spec in (want["xml"].parent, want["xml"]):
        assert detect(spec).name == "DESIS L2A"
    cube = read_cube(want["xml"])
    _check(cube, want, "DESIS L2A")
    assert cube.scale == want["scale"] and cube.offset == want["offset"]
    ok = ~want["invalid"]
    np.testing.assert_array_equal(cube.data[ok], _physical(want["dn"], want["scale"], want["offset"])[ok])


def test_prisma_l2d(tmp_path):
    want = fx.prisma(tmp_path / "prisma")
    assert detect(want["path"]).name == "PRISMA L2D"
    cube = read_cube(want["path"])
    _check(cube, want, "PRISMA L2D")
    assert cube.bands == 63 + 171  # flagged-off bands left out
    assert cube.wavelengths[:63] == sorted(cube.wavelengths[:63])  # ascending per detector
    assert cube.scale == want["scale"] and cube.offset == want["offset"]
    ok = ~want["invalid"]
    np.testing.assert_array_equal(cube.data[ok], _physical(want["dn"], want["scale"], want["offset"])[ok])
    # error code 2 (negative after AC) is a band value, not a nodata pixel
    assert cube.valid[fx.SHADOW].all()


@pytest.mark.parametrize("three", [False, True])
def test_aviris_l2(tmp_path, three):
    want = fx.aviris(tmp_path / "line", three=three)
    for spec in (want["hdr"].parent, want["hdr"], want["data"]):
        assert detect(spec).name == "AVIRIS L2"
    cube = read_cube(want["hdr"].parent)
    _check(cube, want, "AVIRIS-3 L2A" if three else "AVIRIS-NG L2")
    assert cube.scale is None and cube.data.dtype == np.float32
    np.testing.assert_array_equal(cube.data, want["reflectance"])


def test_envi_map_info_rotation_and_micrometres(tmp_path):
    """GDAL turns a rotated map info into a rotated transform; µm wavelengths become nm."""
    want = fx.aviris(tmp_path / "line", rotation=30.0, micrometres=True)
    cube = read_cube(want["hdr"])
    t = cube.transform
    assert t.b != 0 and t.d != 0
    assert np.hypot(t.a, t.d) == pytest.approx(5.0) and (t.c, t.f) == pytest.approx((724522.0, 4074620.0))
    np.testing.assert_allclose(cube.wavelengths, want["wavelengths"], rtol=1e-6)
    np.testing.assert_allclose(cube.fwhm, want["fwhm"], rtol=1e-6)


def test_open_cube_reads_windows(tmp_path):
    want = fx.enmap(tmp_path / "enmap")
    whole = read_cube(want["xml"])
    with open_cube(want["xml"].parent) as src:
        assert src.shape == whole.shape and src.dtype == np.float32 and src.wavelengths == whole.wavelengths
        assert src.crs == whole.crs and src.nodata == whole.nodata
        part = src.read(((4, 9), (8, 20)))
        np.testing.assert_array_equal(part, whole.data[4:9, 8:20])
        np.testing.assert_array_equal(src.read_valid(((4, 9), (8, 20))), whole.valid[4:9, 8:20])
        with pytest.raises(DataError, match="outside the 20×24 cube"):
            src.read(((0, 30), (0, 5)))


def test_open_cube_prisma_window(tmp_path):
    want = fx.prisma(tmp_path / "prisma")
    whole = read_cube(want["path"])
    with open_cube(want["path"]) as src:
        np.testing.assert_array_equal(src.read(((3, 11), (7, 19))), whole.data[3:11, 7:19])


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_corrupt_products(tmp_path):
    e = fx.enmap(tmp_path / "enmap")
    e["xml"].write_text(e["xml"].read_text()[:400])
    with pytest.raises(DataError, match="not well-formed XML") as err:
        read_cube(e["xml"].parent)
    _one_line(err)

    d = fx.desis(tmp_path / "desis")
    d["xml"].write_text(d["xml"].read_text().replace("<gainOfBand>", "<gainOfBand>x", 1))
    with pytest.raises(DataError, match="band 1 gainOfBand is 'x"):
        read_cube(d["xml"])

    p = fx.prisma(tmp_path / "prisma")
    raw = p["path"].read_bytes()
    p["path"].write_bytes(raw[: len(raw) // 3])
    with pytest.raises(DataError, match="PRS_L2D_STD") as err:
        read_cube(p["path"])
    _one_line(err)

    a = fx.aviris(tmp_path / "line")
    a["data"].write_bytes(a["data"].read_bytes()[:-8])
    with pytest.raises(DataError, match="expects") as err:
        read_cube(a["hdr"])
    _one_line(err)


def test_product_band_count_mismatch_and_missing_image(tmp_path):
    e = fx.enmap(tmp_path / "enmap")
    text = e["xml"].read_text()
    first = text.index("<bandID")
    e["xml"].write_text(text[:first] + text[text.index("</bandID>") + len("</bandID>"):])
    with pytest.raises(DataError, match="223 wavelengths for 224 bands"):
        read_cube(e["xml"])
    d = fx.desis(tmp_path / "desis")
    next(d["xml"].parent.glob("*SPECTRAL_IMAGE.tif")).unlink()
    with pytest.raises(DataError, match="DESIS spectral image not found"):
        read_cube(d["xml"].parent)


def test_prisma_missing_attribute(tmp_path):
    import h5py

    p = fx.prisma(tmp_path / "prisma")
    with h5py.File(p["path"], "a") as fh:
        del fh.attrs["Epsg_Code"]
    with pytest.raises(DataError, match="lacks the root attribute Epsg_Code"):
        read_cube(p["path"])


def test_xml_entities_refused(tmp_path):
    e = fx.enmap(tmp_path / "enmap")
    e["xml"].write_text('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]>' + e["xml"].read_text().split("\n", 1)[1])
    with pytest.raises(DataError, match="DTD or entities"):
        read_cube(e["xml"])


def test_plain_files_are_not_products(shared_data):
    assert detect(shared_data / "rasterio_landsat7" / "RGB.byte.tif") is None
    assert detect(shared_data / "indian_pines") is None
