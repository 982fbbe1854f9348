"""AVIRIS-NG Level 2 and AVIRIS-3 Level 2A surface reflectance: ENVI cubes from JPL.

Layout followed: the flight-line files the JPL AVIRIS-NG data portal distributes (``ang…_rfl_v2p*``
tarballs of ENVI pairs) and the ENVI header format (L3Harris, *ENVI Header Files*); AVIRIS-3 L2A
reflectance named as on the AVIRIS data portal (``AV3…_RFL_ORT``). A flight-line folder holds::

    ang20170323t202244_rfl_v2p0/ang20170323t202244_corr_v2p0_img (+ .hdr)   AVIRIS-NG reflectance
    AV320230915t204010_..._RFL_ORT (+ .hdr)                               AVIRIS-3 reflectance

float32 reflectance (no scale), interleave bil, ``wavelength`` / ``fwhm`` in nm (µm in older
headers: converted), ``data ignore value = -9999`` and a ``map info`` (UTM, often with
``rotation=``) that GDAL turns into the CRS and (rotated) transform — :mod:`geolesf.io.envi` reads it.
The acquisition time is the flight line name (``angYYYYMMDDtHHMMSS`` / ``AV3YYYYMMDDtHHMMSS``, UTC).
These files carry no quality layer: nodata pixels (-9999 in every band) are the invalid ones.
Not supported: the NetCDF form in which some AVIRIS-3 products are also distributed, and the
water-vapour, uncertainty (``_unc``/``_UNC``), location and observation files of the same flight line.
"""

from __future__ import annotations

import re
from pathlib import Path

from geolesf.errors import DataError

NAME = "AVIRIS L2"
_LINE = re.compile(r"^(ang|AV3)(\d{4})(\d{2})(\d{2})t(\d{2})(\d{2})(\d{2})", re.IGNORECASE)
_REFLECTANCE = re.compile(r"(_corr_|_rfl)", re.IGNORECASE)
_OTHER = re.compile(r"(_h2o|_unc|_loc|_obs|_igm|_glt)", re.IGNORECASE)
DEFAULT_NODATA = -9999.0


def _is_reflectance(name: str) -> bool:
    return bool(_LINE.match(name) and _REFLECTANCE.search(name) and not _OTHER.search(name))


def _header(path: Path) -> Path | None:
    """The reflectance header a path names: the header itself, its data file, or the flight line folder."""
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() == ".hdr" and _is_reflectance(p.name))
        if len(found) > 1:
            raise DataError(f"{path}: {len(found)} reflectance headers ({', '.join(p.name for p in found)}); name one")
        return found[0] if found else None
    if not _is_reflectance(path.name):
        return None
    if path.suffix.lower() == ".hdr":
        return path
    for cand in (Path(str(path) + ".hdr"), path.with_suffix(".hdr")):
        if cand.is_file():
            return cand
    return None


def matches(path: Path) -> bool:
    try:
        return _header(path) is not None
    except DataError:
        return True


def sensor_of(name: str) -> str:
    return "AVIRIS-3 L2A" if name.upper().startswith("AV3") else "AVIRIS-NG L2"


def acquired_of(name: str) -> str | None:
    m = _LINE.match(name)
    if m is None:
        return None
    y, mo, d, h, mi, s = m.groups()[1:]
    return f"{y}-{mo}-{d}T{h}:{mi}:{s}Z"


def open_product(path: Path):
    """The reflectance cube (:func:`geolesf.io.envi.open_envi`): wavelengths, FWHM, nodata, CRS, transform."""
    from geolesf.io.envi import open_envi

    hdr = _header(path)
    if hdr is None:
        raise DataError(f"{path}: no AVIRIS-NG/AVIRIS-3 reflectance header (ang…_corr…/ang…_rfl…/AV3…_RFL….hdr)")
    src = open_envi(hdr)
    src.meta.sensor = sensor_of(hdr.name)
    src.meta.acquired = acquired_of(hdr.name)
    if src.meta.nodata is None:
        src.meta.nodata = DEFAULT_NODATA
    return src
