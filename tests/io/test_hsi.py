"""Cube and label readers: .mat v5/v7.3, ENVI, GeoTIFF; bad inputs raise DataError."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import scipy.io
from rasterio.transform import from_origin

from geolesf.errors import DataError
from geolesf.io.envi import parse_envi_header, read_envi
from geolesf.io.hsi import read_cube, read_labels


@pytest.fixture(scope="module")
def ip(shared_data):
    cube = scipy.io.loadmat(shared_data / "indian_pines" / "IP_200_M.mat")["data_M"]
    gt = scipy.io.loadmat(shared_data / "indian_pines" / "Indian_pines_gt.mat")["indian_pines_gt"]
    return cube[:20, :24, :12].copy(), gt[:20, :24].copy()


def test_mat_v5_autodetect(shared_data):
    cube = read_cube(shared_data / "indian_pines" / "IP_200_M.mat")
    assert cube.data.shape == (145, 145, 200) and cube.data.dtype == np.uint8
    assert not cube.georeferenced and "no CRS" in cube.georef_note()
    gt = read_labels(shared_data / "indian_pines" / "Indian_pines_gt.mat")
    assert gt.shape == (145, 145) and int((gt.data > 0).sum()) == 10249


def test_mat_explicit_key_and_unknown_key(tmp_path, ip):
    cube, gt = ip
    path = tmp_path / "both.mat"
    scipy.io.savemat(path, {"X": cube, "gt": gt, "other": gt.astype(np.float64) * 0.5})
    assert np.array_equal(read_cube(f"{path}:X").data, cube)
    assert np.array_equal(read_labels(f"{path}:gt").data, gt)
    with pytest.raises(DataError, match=r"no numeric array named 'nope'; available keys: .*X .*gt"):
        read_cube(f"{path}:nope")


def test_mat_ambiguous_label_key(tmp_path, ip):
    cube, gt = ip
    path = tmp_path / "two.mat"
    scipy.io.savemat(path, {"a": gt, "b": gt})
    with pytest.raises(DataError, match="cannot choose the labels key"):
        read_labels(path)


def test_mat_v73_hdf5_transposed(tmp_path, ip):
    h5py = pytest.importorskip("h5py")
    cube, gt = ip
    path = tmp_path / "v73.mat"
    # MATLAB v7.3 writes column-major arrays: HDF5 sees the axes reversed.
    with h5py.File(path, "w", userblock_size=512) as fh:
        fh.create_dataset("cube", data=cube.T)
        fh.create_dataset("labels", data=gt.T)
    got = read_cube(path)
    assert np.array_equal(got.data, cube)
    assert np.array_equal(read_labels(path).data, gt)


def test_nan_band_named(tmp_path, ip):
    cube, _ = ip
    bad = cube.astype(np.float32)
    bad[3, 4, 5] = np.nan
    bad[0, 0, 7] = np.inf
    path = tmp_path / "nan.mat"
    scipy.io.savemat(path, {"X": bad})
    with pytest.raises(DataError, match=r"NaN or Inf values in 2 band\(s\): 6 \(band_6\), 8 \(band_8\)") as err:
        read_cube(path)
    assert "\n" not in str(err.value)


def _write_envi(tmp_path, cube, interleave="bsq", byte_order=0, dtype="<u2", extra=""):
    data = cube.astype(dtype)
    lines, samples, bands = cube.shape
    layout = {"bsq": (2, 0, 1), "bil": (0, 2, 1), "bip": (0, 1, 2)}[interleave]
    (tmp_path / "cube.img").write_bytes(data.transpose(layout).tobytes())
    code = {"u2": 12, "f4": 4, "i2": 2}[np.dtype(dtype).str[1:]]
    hdr = (
        "ENVI\ndescription = {test cube}\n"
        f"samples = {samples}\nlines = {lines}\nbands = {bands}\nheader offset = 0\n"
        f"file type = ENVI Standard\ndata type = {code}\ninterleave = {interleave}\n"
        f"byte order = {byte_order}\n"
        "wavelength = {\n " + ",\n ".join(f"{400 + 10 * i:.1f}" for i in range(bands)) + "}\n"
        "band names = {" + ", ".join(f"B{i}" for i in range(bands)) + "}\n" + extra
    )
    (tmp_path / "cube.hdr").write_text(hdr)
    return tmp_path / "cube.hdr"


@pytest.mark.parametrize("interleave", ["bsq", "bil", "bip"])
@pytest.mark.parametrize("dtype,order", [("<u2", 0), (">f4", 1)])
def test_envi_interleaves(tmp_path, ip, interleave, dtype, order):
    cube, _ = ip
    hdr = _write_envi(tmp_path, cube, interleave, order, dtype)
    got = read_cube(hdr)
    assert got.data.shape == cube.shape
    assert np.array_equal(got.data.astype(np.float64), cube.astype(np.float64))
    assert got.wavelengths[:2] == [400.0, 410.0]
    assert got.band_names[0] == "B0"
    assert np.array_equal(read_envi(tmp_path / "cube.img").data, got.data)


def test_envi_header_parse(tmp_path, ip):
    hdr = _write_envi(tmp_path, ip[0])
    h = parse_envi_header(hdr)
    assert h["samples"] == "24" and h["interleave"] == "bsq" and len(h["wavelength"]) == 12


def test_envi_wrong_interleave(tmp_path, ip):
    hdr = _write_envi(tmp_path, ip[0])
    hdr.write_text(hdr.read_text().replace("interleave = bsq", "interleave = bsx"))
    with pytest.raises(DataError, match="interleave must be bsq, bil or bip; found 'bsx'"):
        read_cube(hdr)


def test_envi_size_mismatch(tmp_path, ip):
    hdr = _write_envi(tmp_path, ip[0])
    img = tmp_path / "cube.img"
    img.write_bytes(img.read_bytes()[:-10])
    with pytest.raises(DataError, match="bytes; header cube.hdr .* expects"):
        read_cube(hdr)


def test_geotiff_cube_keeps_georef(shared_data):
    cube = read_cube(shared_data / "rasterio_landsat7" / "RGB.byte.tif")
    assert cube.data.shape == (718, 791, 3)
    assert cube.georeferenced and cube.crs.to_epsg() == 32618
    assert cube.nodata == 0 and cube.transform.a == pytest.approx(300.0379266750948)


def test_labels_from_tif_and_png(tmp_path, shared_data, ip):
    mask = read_labels(shared_data / "indian_pines" / "indianpines_ts.tif")
    assert mask.shape == (145, 145) and int((mask.data > 0).sum()) == 5689
    _, gt = ip
    png = tmp_path / "gt.png"
    with rasterio.open(png, "w", driver="PNG", width=gt.shape[1], height=gt.shape[0], count=1,
                       dtype="uint8") as dst:
        dst.write(gt, 1)
    assert np.array_equal(read_labels(png).data, gt)


def test_labels_multiband_rejected(tmp_path, ip):
    cube, _ = ip
    path = tmp_path / "multi.tif"
    with rasterio.open(path, "w", driver="GTiff", width=24, height=20, count=3, dtype="uint8",
                       crs="EPSG:32616", transform=from_origin(500000, 4000000, 1, 1)) as dst:
        dst.write(cube[:, :, :3].transpose(2, 0, 1))
    with pytest.raises(DataError, match="must have 1 band, found 3"):
        read_labels(path)


def test_missing_file():
    with pytest.raises(DataError, match="not found"):
        read_cube("/nonexistent/cube.mat")


def test_envi_map_info_gives_crs_and_transform(tmp_path, ip):
    """GDAL reads the ENVI map info: CRS and transform survive; wavelengths in µm become nm."""
    extra = ("map info = {UTM, 1.000, 1.000, 500000.000, 4000000.000, 30.000, 30.000, 16, North, WGS-84, "
             "units=Meters}\ndata ignore value = 0\nwavelength units = Micrometers\n")
    hdr = _write_envi(tmp_path, ip[0], "bil", 0, "<u2", extra=extra)
    hdr.write_text(hdr.read_text().replace("wavelength = {\n 400.0", "wavelength = {\n 0.4"))
    cube = read_cube(hdr)
    assert cube.crs.to_epsg() == 32616
    assert tuple(cube.transform)[:6] == (30.0, 0.0, 500000.0, 0.0, -30.0, 4000000.0)
    assert cube.nodata == 0.0 and cube.wavelengths[0] == pytest.approx(400.0)


def test_open_cube_windows_of_plain_rasters(tmp_path, ip, shared_data):
    from geolesf.io.hsi import open_cube

    hdr = _write_envi(tmp_path, ip[0], "bip", 1, ">f4")
    with open_cube(hdr) as src:
        assert src.shape == (20, 24, 12) and src.wavelengths[:2] == [400.0, 410.0]
        np.testing.assert_array_equal(src.read(((2, 5), (3, 9))), ip[0][2:5, 3:9].astype(np.float32))
    with open_cube(shared_data / "rasterio_landsat7" / "RGB.byte.tif") as src:
        whole = read_cube(shared_data / "rasterio_landsat7" / "RGB.byte.tif")
        assert src.crs == whole.crs and src.nodata == 0
        np.testing.assert_array_equal(src.read(((100, 140), (200, 260))), whole.data[100:140, 200:260])
    with pytest.raises(DataError, match="no lazy reader"):
        open_cube(shared_data / "indian_pines" / "IP_200_M.mat")
