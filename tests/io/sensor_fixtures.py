"""Sensor-product test fixtures: each product's documented layout filled with real pixels.

No EnMAP, DESIS, PRISMA or AVIRIS product is on this machine, so these builders write the *layout*
each product is distributed in (file names, XML element names, HDF5 paths and attributes, ENVI header
keys — see ``docs/sensors.md`` for the documents followed) and fill it with real AVIRIS pixels: a
20 × 24 crop of the embedded Indian Pines cube (``IP_200_M.mat``, 200 bands, 0..255), linearly
resampled along the band axis to the product's band count and mapped to reflectance 0.02..0.62, then
to the product's DN through its documented scale. They are fixtures, not real products: the band
centres are the documented band count spread evenly over the documented spectral range (the real
per-band lists were not available offline), and the nodata collar and cloud flags are placed by hand.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import scipy.io
from rasterio.transform import from_origin

ROOT = Path(__file__).resolve().parents[2]
IP = ROOT / "geolesf" / "embedded" / "indian_pines" / "IP_200_M.mat"
ROWS, COLS = 20, 24
COLLAR = (slice(0, 2), slice(0, 3))
"""Pixels set to the background value in every band (a nodata collar)."""
CLOUD = (slice(5, 8), slice(10, 13))
SHADOW = (slice(12, 14), slice(4, 6))


def reflectance(bands: int) -> np.ndarray:
    """``(ROWS, COLS, bands)`` float64 reflectance from real Indian Pines pixels."""
    cube = scipy.io.loadmat(IP)["data_M"][40:40 + ROWS, 60:60 + COLS, :].astype(np.float64)
    src = np.linspace(0.0, 1.0, cube.shape[2])
    dst = np.linspace(0.0, 1.0, bands)
    flat = cube.reshape(-1, cube.shape[2])
    out = np.stack([np.interp(dst, src, row) for row in flat]).reshape(ROWS, COLS, bands)
    return 0.02 + out / 255.0 * 0.6


def expected_invalid(*regions: tuple[slice, slice]) -> np.ndarray:
    mask = np.zeros((ROWS, COLS), bool)
    for region in (COLLAR, *regions):
        mask[region] = True
    return mask


def _tif(path: Path, bands_first: np.ndarray, crs: str, transform, nodata=None) -> None:
    profile = dict(driver="GTiff", height=ROWS, width=COLS, count=bands_first.shape[0], dtype=bands_first.dtype.name,
                   crs=crs, transform=transform, nodata=nodata)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(bands_first)


def _flag(region: tuple[slice, slice]) -> np.ndarray:
    out = np.zeros((1, ROWS, COLS), np.uint8)
    out[0][region] = 1
    return out


# --------------------------------------------------------------------------------------------
# EnMAP L2A

ENMAP_NAME = "ENMAP01-____L2A-DT0000001867_20220724T104526Z_008_V010302_20230628T165614Z"


def enmap(folder: Path) -> dict:
    """An EnMAP L2A folder; returns what a reader must find."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 224
    wl = np.round(np.linspace(418.416, 2445.53, n), 3)
    fwhm = np.where(wl < 1000, 7.8, 11.2)
    gain, offset, background = 2.0e-5 * np.ones(n), np.zeros(n), -32768
    dn = np.round(reflectance(n) / gain).astype(np.int16)
    dn[COLLAR] = background
    transform = from_origin(368970.0, 5813040.0, 30.0, 30.0)
    _tif(folder / f"{ENMAP_NAME}-SPECTRAL_IMAGE.TIF", np.moveaxis(dn, 2, 0), "EPSG:32633", transform, background)
    _tif(folder / f"{ENMAP_NAME}-QL_QUALITY_CLOUD.TIF", _flag(CLOUD), "EPSG:32633", transform)
    _tif(folder / f"{ENMAP_NAME}-QL_QUALITY_CLOUDSHADOW.TIF", _flag(SHADOW), "EPSG:32633", transform)
    _tif(folder / f"{ENMAP_NAME}-QL_QUALITY_HAZE.TIF", _flag((slice(0, ROWS), slice(0, COLS))), "EPSG:32633",
         transform)  # all haze: must not be masked
    band_xml = "".join(
        f'<bandID number="{i + 1}"><wavelengthCenterOfBand>{wl[i]:.3f}</wavelengthCenterOfBand>'
        f"<FWHMOfBand>{fwhm[i]:.1f}</FWHMOfBand><GainOfBand>{gain[i]:.6g}</GainOfBand>"
        f"<OffsetOfBand>{offset[i]:g}</OffsetOfBand></bandID>" for i in reversed(range(n)))  # any order
    xml = ('<?xml version="1.0" encoding="UTF-8"?>\n<level_X><metadata><name>' + ENMAP_NAME + "</name></metadata>"
           "<base><level>L2A</level><temporalCoverage><startTime>2022-07-24T10:45:26.123456Z</startTime>"
           "<stopTime>2022-07-24T10:45:30.000000Z</stopTime></temporalCoverage></base>"
           f"<specific><backgroundValue>{background}</backgroundValue><bandCharacterisation>{band_xml}"
           "</bandCharacterisation></specific><product><ortho><projection>UTM_Zone33_North</projection>"
           "<resolution>30</resolution></ortho></product></level_X>\n")
    (folder / f"{ENMAP_NAME}-METADATA.XML").write_text(xml)
    return {"xml": folder / f"{ENMAP_NAME}-METADATA.XML", "wavelengths": wl.tolist(), "fwhm": fwhm.tolist(),
            "scale": gain.tolist(), "offset": offset.tolist(), "nodata": float(background), "dn": dn,
            "crs": 32633, "transform": transform, "invalid": expected_invalid(CLOUD, SHADOW),
            "acquired": "2022-07-24T10:45:26.123456Z"}


# --------------------------------------------------------------------------------------------
# DESIS L2A

DESIS_NAME = "DESIS-HSI-L2A-DT1203190212_025-20191203T021128-V0210"


def desis(folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    n = 235
    wl = np.round(np.linspace(401.9, 999.2, n), 2)
    fwhm = np.full(n, 3.5)
    gain = np.round(1.0e-4 * (1 + 0.01 * (np.arange(n) % 3)), 8)  # per band, to prove per-band reading
    offset = np.full(n, -0.001)
    background = -9999
    dn = np.round((reflectance(n) - offset) / gain).astype(np.int16)
    dn[COLLAR] = background
    transform = from_origin(277500.0, 3652500.0, 30.0, 30.0)
    _tif(folder / f"{DESIS_NAME}-SPECTRAL_IMAGE.tif", np.moveaxis(dn, 2, 0), "EPSG:32650", transform, background)
    quality = np.zeros((1, ROWS, COLS), np.uint8)
    quality[0][CLOUD] = 4
    _tif(folder / f"{DESIS_NAME}-QUALITY.tif", quality, "EPSG:32650", transform)
    bands = "".join(
        f"<band><bandNumber>{i + 1}</bandNumber><wavelengthCenterOfBand>{wl[i]:.2f}</wavelengthCenterOfBand>"
        f"<wavelengthWidthOfBand>{fwhm[i]:.1f}</wavelengthWidthOfBand><gainOfBand>{gain[i]:.8g}</gainOfBand>"
        f"<offsetOfBand>{offset[i]:g}</offsetOfBand></band>" for i in range(n))
    xml = ('<?xml version="1.0" encoding="UTF-8"?>\n<hsi_doc><base><mission>DESIS</mission>'
           "<temporalCoverage><startTime>2019-12-03T02:11:28.5Z</startTime><endTime>2019-12-03T02:11:32Z</endTime>"
           f"</temporalCoverage></base><specific><backgroundValue>{background}</backgroundValue>"
           f"<numberOfBands>{n}</numberOfBands><bandCharacterisation>{bands}</bandCharacterisation>"
           "</specific></hsi_doc>\n")
    (folder / f"{DESIS_NAME}-METADATA.xml").write_text(xml)
    return {"xml": folder / f"{DESIS_NAME}-METADATA.xml", "wavelengths": wl.tolist(), "fwhm": fwhm.tolist(),
            "scale": gain.tolist(), "offset": offset.tolist(), "nodata": float(background), "dn": dn,
            "crs": 32650, "transform": transform, "invalid": expected_invalid(CLOUD),
            "acquired": "2019-12-03T02:11:28.500000Z"}


# --------------------------------------------------------------------------------------------
# PRISMA L2D

PRISMA_NAME = "PRS_L2D_STD_20201107101404_20201107101408_0001.he5"
HCO = "HDFEOS/SWATHS/PRS_L2D_HCO"


def prisma(folder: Path) -> dict:
    import h5py

    folder.mkdir(parents=True, exist_ok=True)
    nv, ns = 66, 173
    # stored as the product stores them: descending wavelength, unused bands with centre 0 / flag 0
    cw_v = np.round(np.linspace(1010.0, 402.0, nv), 3)
    cw_s = np.round(np.linspace(2497.0, 920.0, ns), 3)
    cw_v[:3], cw_s[-2:] = 0.0, 0.0
    flags_v, flags_s = (cw_v > 0).astype(np.int32), (cw_s > 0).astype(np.int32)
    fw_v, fw_s = np.where(cw_v > 0, 10.5, 0.0), np.where(cw_s > 0, 11.5, 0.0)
    scale = {"Vnir": (0.0, 1.2), "Swir": (0.0, 0.9)}
    cube = reflectance(nv + ns)
    cubes, errors = {}, {}
    for det, cw, sl in (("Vnir", cw_v, slice(0, nv)), ("Swir", cw_s, slice(nv, nv + ns))):
        lo, hi = scale[det]
        refl = cube[:, :, sl][:, :, ::-1]  # store descending
        dn = np.clip(np.round((refl - lo) / (hi - lo) * 65535), 1, 65535).astype(np.uint16)
        dn[COLLAR] = 0
        cubes[det] = dn.transpose(0, 2, 1)  # (rows, bands, cols)
        err = np.zeros_like(cubes[det], dtype=np.uint8)
        errors[det] = err
    errors["Swir"][CLOUD[0], 40, CLOUD[1]] = 1  # invalid L1 pixel in one kept SWIR band
    errors["Vnir"][SHADOW[0], 10, SHADOW[1]] = 2  # negative after AC: a band value, not a nodata pixel
    path = folder / PRISMA_NAME
    with h5py.File(path, "w") as fh:
        for det in ("Vnir", "Swir"):
            fh.create_dataset(f"{HCO}/Data Fields/{det.upper()}_Cube", data=cubes[det])
            fh.create_dataset(f"{HCO}/Data Fields/{det.upper()}_PIXEL_L2_ERR_MATRIX", data=errors[det])
            lo, hi = scale[det]
            fh.attrs[f"L2Scale{det}Min"], fh.attrs[f"L2Scale{det}Max"] = lo, hi
        fh.create_dataset(f"{HCO}/Geolocation Fields/Latitude", data=np.zeros((ROWS, COLS), np.float32))
        fh.attrs.update({"List_Cw_Vnir": cw_v.astype(np.float32), "List_Cw_Swir": cw_s.astype(np.float32),
                         "List_Fwhm_Vnir": fw_v.astype(np.float32), "List_Fwhm_Swir": fw_s.astype(np.float32),
                         "List_Cw_Vnir_Flags": flags_v.astype(np.int8), "List_Cw_Swir_Flags": flags_s.astype(np.int8),
                         "Epsg_Code": np.int32(32632), "Product_ULcorner_easting": 600015.0,
                         "Product_ULcorner_northing": 5100015.0, "Processing_Level": np.bytes_(b"2D"),
                         "Product_StartTime": np.bytes_(b"2020-11-07T10:14:04.123")})
    keep_v = [i for i in np.argsort(cw_v) if cw_v[i] > 0]
    keep_s = [i for i in np.argsort(cw_s) if cw_s[i] > 0]
    wl = [float(np.float32(cw_v[i])) for i in keep_v] + [float(np.float32(cw_s[i])) for i in keep_s]
    fw = [float(np.float32(fw_v[i])) for i in keep_v] + [float(np.float32(fw_s[i])) for i in keep_s]
    dn = np.concatenate([cubes["Vnir"][:, keep_v, :], cubes["Swir"][:, keep_s, :]], axis=1).transpose(0, 2, 1)
    sc = [scale["Vnir"][1] / 65535.0] * len(keep_v) + [scale["Swir"][1] / 65535.0] * len(keep_s)
    return {"path": path, "wavelengths": wl, "fwhm": fw, "scale": sc, "offset": [0.0] * len(wl), "nodata": 0.0,
            "dn": dn, "crs": 32632, "transform": from_origin(600000.0, 5100030.0, 30.0, 30.0),
            "invalid": expected_invalid(CLOUD), "acquired": "2020-11-07T10:14:04.123000Z"}


# --------------------------------------------------------------------------------------------
# AVIRIS-NG / AVIRIS-3 (ENVI)

AVNG_LINE = "ang20170323t202244"
AV3_LINE = "AV320230915t204010"


def aviris(folder: Path, three: bool = False, rotation: float = 0.0, micrometres: bool = False) -> dict:
    """An AVIRIS-NG L2 (or AVIRIS-3 L2A) flight line folder with the reflectance ENVI pair (bil, float32)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 284 if three else 425
    wl = np.round(np.linspace(380.0 if three else 376.86, 2510.0 if three else 2500.6, n), 4)
    fwhm = np.full(n, 7.4 if three else 5.5)
    refl = reflectance(n).astype(np.float32)
    refl[COLLAR] = -9999.0
    name = (f"{AV3_LINE}_L2A_OE_main_27577724_RFL_ORT" if three else f"{AVNG_LINE}_corr_v2p0_img")
    data = folder / name
    data.write_bytes(refl.transpose(0, 2, 1).astype("<f4").tobytes())  # bil: (lines, bands, samples)
    zone, x0, y0, px = (11, 724522.0, 4074620.0, 5.0)
    scale = 1000.0 if micrometres else 1.0
    hdr = ("ENVI\ndescription = {AVIRIS reflectance fixture}\n"
           f"samples = {COLS}\nlines = {ROWS}\nbands = {n}\nheader offset = 0\nfile type = ENVI Standard\n"
           "data type = 4\ninterleave = bil\nbyte order = 0\n"
           f"map info = {{UTM, 1.000, 1.000, {x0}, {y0}, {px}, {px}, {zone}, North, WGS-84, units=Meters"
           + (f", rotation={rotation}" if rotation else "") + "}\n"
           f"wavelength units = {'Micrometers' if micrometres else 'Nanometers'}\n"
           "wavelength = {" + ", ".join(f"{w / scale:.10g}" for w in wl) + "}\n"
           "fwhm = {" + ", ".join(f"{f / scale:.10g}" for f in fwhm) + "}\n"
           "data ignore value = -9999\n")
    (folder / f"{name}.hdr").write_text(hdr)
    acquired = "2023-09-15T20:40:10Z" if three else "2017-03-23T20:22:44Z"
    (folder / f"{(AV3_LINE if three else AVNG_LINE)}_{'UNC_ORT' if three else 'h2o_v2p0_img'}.hdr").write_text(hdr)
    return {"hdr": folder / f"{name}.hdr", "data": data, "wavelengths": wl.tolist(), "fwhm": fwhm.tolist(),
            "nodata": -9999.0, "reflectance": refl, "crs": 32611, "transform": from_origin(x0, y0, px, px),
            "invalid": expected_invalid(), "acquired": acquired}
