"""ENVI hyperspectral cubes: the ``.hdr`` header reader and the raw binary (bsq / bil / bip) cube.

:func:`geolesf.io.hsi.read_cube` and :func:`~geolesf.io.hsi.read_labels` dispatch here when
:func:`is_envi` recognises a path (the header itself, or a data file with a ``.hdr`` beside it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.errors import DataError
from geolesf.io.cube import HSICube, check_budget, require_file, resolve_path

ENVI_DATA_SUFFIXES = ("", ".img", ".dat", ".raw", ".bin", ".bsq", ".bil", ".bip")

# ENVI "data type" codes → numpy dtypes (byte order applied later).
ENVI_DTYPES = {
    1: "u1", 2: "i2", 3: "i4", 4: "f4", 5: "f8", 6: "c8", 9: "c16",
    12: "u2", 13: "u4", 14: "i8", 15: "u8",
}


def is_envi(path: Path) -> bool:
    """Whether ``path`` is an ENVI header or a data file with its ``.hdr`` beside it."""
    if path.suffix.lower() == ".hdr":
        return True
    return Path(str(path) + ".hdr").is_file() or (
        path.suffix.lower() in ENVI_DATA_SUFFIXES[1:] and path.with_suffix(".hdr").is_file()
    )


def parse_envi_header(path: str | Path) -> dict[str, Any]:
    """Parse an ENVI ``.hdr`` file into a dict (lower-case keys, ``{...}`` values as lists)."""
    path = Path(path)
    require_file(path, "ENVI header")
    text = path.read_text(errors="replace")
    lines = text.splitlines()
    if not lines or lines[0].strip().upper() != "ENVI":
        raise DataError(f"{path}: not an ENVI header (first line must be 'ENVI')")
    body = "\n".join(lines[1:])
    header: dict[str, Any] = {}
    pos = 0
    pattern = re.compile(r"^\s*([^=\n]+?)\s*=\s*", re.MULTILINE)
    while True:
        m = pattern.search(body, pos)
        if m is None:
            break
        key = m.group(1).strip().lower()
        start = m.end()
        if body.startswith("{", start):
            end = body.find("}", start)
            if end < 0:
                raise DataError(f"{path}: unterminated '{{' in value of '{key}'")
            inner = body[start + 1:end]
            header[key] = [item.strip() for item in inner.replace("\n", " ").split(",")]
            if header[key] == [""]:
                header[key] = []
            pos = end + 1
        else:
            end = body.find("\n", start)
            end = len(body) if end < 0 else end
            header[key] = body[start:end].strip()
            pos = end
    return header


def _envi_paths(spec: Path) -> tuple[Path, Path]:
    """(header, data file) from either of them."""
    if spec.suffix.lower() == ".hdr":
        hdr = spec
        stem = spec.with_suffix("")
        for suffix in ENVI_DATA_SUFFIXES:
            cand = Path(str(stem) + suffix)
            if cand.is_file():
                return hdr, cand
        raise DataError(
            f"{hdr}: ENVI data file not found beside the header (tried {stem.name} with suffixes "
            f"{', '.join(s or '(none)' for s in ENVI_DATA_SUFFIXES)})"
        )
    for cand in (Path(str(spec) + ".hdr"), spec.with_suffix(".hdr")):
        if cand.is_file():
            return cand, spec
    raise DataError(f"{spec}: no ENVI header (.hdr) found beside it")


def _header_int(header: dict[str, Any], key: str, hdr: Path, default: int | None = None) -> int:
    if key not in header:
        if default is not None:
            return default
        raise DataError(f"{hdr}: ENVI header lacks required field '{key}'")
    try:
        return int(str(header[key]).strip())
    except ValueError:
        raise DataError(f"{hdr}: ENVI field '{key}' = {header[key]!r} is not an integer") from None


def read_envi(spec: str | Path) -> HSICube:
    """Read an ENVI cube (``.hdr`` + raw binary) into an ``(H, W, Bands)`` :class:`HSICube`."""
    hdr, data_path = _envi_paths(resolve_path(spec))
    header = parse_envi_header(hdr)
    samples = _header_int(header, "samples", hdr)
    lines = _header_int(header, "lines", hdr)
    bands = _header_int(header, "bands", hdr)
    dtype_code = _header_int(header, "data type", hdr)
    offset = _header_int(header, "header offset", hdr, default=0)
    byte_order = _header_int(header, "byte order", hdr, default=0)
    interleave = str(header.get("interleave", "bsq")).strip().lower()
    for field_name, value in (("samples", samples), ("lines", lines), ("bands", bands)):
        if value < 1:
            raise DataError(f"{hdr}: ENVI field '{field_name}' must be at least 1, found {value}")
    if offset < 0:
        raise DataError(f"{hdr}: ENVI field 'header offset' must be 0 or more, found {offset}")
    if dtype_code not in ENVI_DTYPES:
        raise DataError(
            f"{hdr}: unsupported ENVI data type {dtype_code} (supported: {sorted(ENVI_DTYPES)})"
        )
    if interleave not in ("bsq", "bil", "bip"):
        raise DataError(f"{hdr}: ENVI interleave must be bsq, bil or bip; found '{interleave}'")
    if byte_order not in (0, 1):
        raise DataError(f"{hdr}: ENVI byte order must be 0 or 1; found {byte_order}")
    dtype = np.dtype(("<" if byte_order == 0 else ">") + ENVI_DTYPES[dtype_code])
    expected = offset + samples * lines * bands * dtype.itemsize
    require_file(data_path, "ENVI data")
    actual = data_path.stat().st_size
    if actual != expected:
        raise DataError(
            f"{data_path}: file has {actual} bytes; header {hdr.name} ({samples} samples × {lines} "
            f"lines × {bands} bands × {dtype.itemsize} bytes + offset {offset}) expects {expected}"
        )
    # sizes checked against the file (above) and the memory budget before anything is allocated
    check_budget(expected - offset, str(data_path), (lines, samples, bands))
    try:
        flat = np.fromfile(data_path, dtype=dtype, offset=offset, count=samples * lines * bands)
    except (OSError, ValueError) as exc:
        raise DataError(f"{data_path}: cannot read the ENVI data ({' '.join(str(exc).split())})") from None
    if interleave == "bsq":
        data = flat.reshape(bands, lines, samples).transpose(1, 2, 0)
    elif interleave == "bil":
        data = flat.reshape(lines, bands, samples).transpose(0, 2, 1)
    else:
        data = flat.reshape(lines, samples, bands)
    data = np.ascontiguousarray(data).astype(dtype.newbyteorder("="), copy=False)
    names = header.get("band names")
    if not isinstance(names, list) or len(names) != bands:
        names = [f"band_{i + 1}" for i in range(bands)]
    wavelengths = None
    wl = header.get("wavelength")
    if isinstance(wl, list) and len(wl) == bands:
        try:
            wavelengths = [float(w) for w in wl]
        except ValueError:
            raise DataError(f"{hdr}: ENVI 'wavelength' holds non-numeric values") from None
    nodata = None
    if "data ignore value" in header:
        try:
            nodata = float(header["data ignore value"])
        except ValueError:
            pass
    return HSICube(
        data=data, band_names=list(names), wavelengths=wavelengths, nodata=nodata,
        path=str(data_path),
    )
