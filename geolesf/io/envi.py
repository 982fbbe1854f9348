"""ENVI hyperspectral cubes: the ``.hdr`` header reader, and the raw binary (bsq / bil / bip) cube read
through GDAL's ENVI driver so that ``map info`` / ``coordinate system string`` give the CRS and transform.

:func:`geolesf.io.hsi.read_cube` and :func:`~geolesf.io.hsi.read_labels` dispatch here when
:func:`is_envi` recognises a path (the header itself, or a data file with a ``.hdr`` beside it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.errors import DataError
from geolesf.io.cube import HSICube, require_file, resolve_path

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


def _check_envi(spec: str | Path) -> tuple[Path, Path, dict[str, Any], tuple[int, int, int], tuple[Any, ...]]:
    """Header, data file, parsed header and (lines, samples, bands), all checked against each other
    and the data file's size before GDAL sees them."""
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
    itemsize = np.dtype(ENVI_DTYPES[dtype_code]).itemsize
    expected = offset + samples * lines * bands * itemsize
    require_file(data_path, "ENVI data")
    actual = data_path.stat().st_size
    if actual != expected:
        raise DataError(
            f"{data_path}: file has {actual} bytes; header {hdr.name} ({samples} samples × {lines} "
            f"lines × {bands} bands × {itemsize} bytes + offset {offset}) expects {expected}"
        )
    dtype = np.dtype(("<" if byte_order == 0 else ">") + ENVI_DTYPES[dtype_code])
    return hdr, data_path, header, (lines, samples, bands), (interleave, dtype, offset)


#: ``wavelength units`` values that mean micrometres (converted to nm) and units that are no wavelength.
MICROMETRE_UNITS = {"micrometers", "micrometer", "micrometres", "micrometre", "microns", "micron", "um", "µm", "μm"}
NOT_WAVELENGTH_UNITS = {"index", "wavenumber", "ghz", "mhz", "data value"}


def _unit_factor(header: dict[str, Any], values: list[float]) -> float | None:
    """nm per header unit of ``wavelength``/``fwhm``; None when the units are no wavelength.

    Micrometres (``wavelength units = Micrometers``) are converted to nm. Deviation from the ENVI spec,
    which leaves missing units undefined: without units (or ``Unknown``) values all below 30 are taken
    as µm, since no imaging spectrometer has a band below 30 nm.
    """
    units = str(header.get("wavelength units", "")).strip().lower()
    if units in NOT_WAVELENGTH_UNITS:
        return None
    if units in MICROMETRE_UNITS or (units in ("", "unknown") and values and max(values) < 30):
        return 1000.0
    return 1.0


def _header_floats(header: dict[str, Any], key: str, bands: int, hdr: Path) -> list[float] | None:
    values = header.get(key)
    if not isinstance(values, list) or len(values) != bands:
        return None
    try:
        return [float(v) for v in values]
    except ValueError:
        raise DataError(f"{hdr}: ENVI '{key}' holds non-numeric values") from None


def header_wavelengths(header: dict[str, Any], bands: int, hdr: Path) -> tuple[list[float] | None, list[float] | None]:
    """The header's ``wavelength`` and ``fwhm`` lists in nm (each None when absent or of another length)."""
    wavelengths = _header_floats(header, "wavelength", bands, hdr)
    if wavelengths is None:
        return None, None
    factor = _unit_factor(header, wavelengths)
    if factor is None:
        return None, None
    fwhm = _header_floats(header, "fwhm", bands, hdr)
    return [w * factor for w in wavelengths], None if fwhm is None else [f * factor for f in fwhm]


def envi_meta(header: dict[str, Any], bands: int, hdr: Path) -> Any:
    """Band names, wavelengths (nm), FWHM (nm) and nodata (``data ignore value``) of a header."""
    from geolesf.io.source import CubeMeta

    names = header.get("band names")
    if not isinstance(names, list) or len(names) != bands:
        names = [f"band_{i + 1}" for i in range(bands)]
    wavelengths, fwhm = header_wavelengths(header, bands, hdr)
    nodata = None
    if "data ignore value" in header:
        try:
            nodata = float(header["data ignore value"])
        except ValueError:
            pass
    return CubeMeta(band_names=list(names), wavelengths=wavelengths, fwhm=fwhm, nodata=nodata)


def _envi_source() -> type:
    """:class:`~geolesf.io.source.RasterCubeSource` whose pixels come from a memory map of the raw file.

    GDAL opens the file (CRS, transform from ``map info``); pixels are sliced from ``numpy.memmap``,
    several times faster than GDAL's ENVI driver (``benchmarks/bench_envi_read.py``).
    """
    from geolesf.io.source import RasterCubeSource

    class EnviCubeSource(RasterCubeSource):
        def __init__(self, path: Path, meta: Any, layout: tuple[Any, ...], dims: tuple[int, int, int]) -> None:
            super().__init__(path, meta, what="ENVI data", driver="ENVI")
            interleave, dtype, offset = layout
            lines, samples, bands = dims
            shape = {"bsq": (bands, lines, samples), "bil": (lines, bands, samples),
                     "bip": (lines, samples, bands)}[interleave]
            self._interleave = interleave
            try:
                self._raw = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
            except (OSError, ValueError) as exc:
                self.close()
                raise DataError(f"{path}: cannot map the ENVI data ({' '.join(str(exc).split())})") from None
            self.native_dtype = dtype.newbyteorder("=")

        def _read_native(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
            raw = self._raw
            if self._interleave == "bsq":
                block = raw[:, r0:r1, c0:c1]
            elif self._interleave == "bil":
                block = raw[r0:r1, :, c0:c1].transpose(1, 0, 2)
            else:
                block = raw[r0:r1, c0:c1, :].transpose(2, 0, 1)
            try:
                return np.ascontiguousarray(block).astype(self.native_dtype, copy=False)
            except OSError as exc:  # the file shrank under the map
                raise DataError(f"{self.path}: cannot read the ENVI data ({' '.join(str(exc).split())})") from None

    return EnviCubeSource


def open_envi(spec: str | Path) -> Any:
    """An ENVI cube opened lazily through GDAL (:class:`~geolesf.io.source.RasterCubeSource`).

    GDAL's ENVI driver opens the file and turns ``map info`` / ``coordinate system string`` into the CRS
    and affine transform (rotation included); the raw pixels (bsq / bil / bip, either byte order) are read
    through a memory map. The header is checked here first (fields, sizes against the data file) so a
    broken file gets a one-line error.
    """
    hdr, data_path, header, (lines, samples, bands), layout = _check_envi(spec)
    src = _envi_source()(data_path, envi_meta(header, bands, hdr), layout, (lines, samples, bands))
    if src.shape != (lines, samples, bands):
        found = src.shape
        src.close()
        raise DataError(f"{data_path}: GDAL reads {found[0]}×{found[1]}×{found[2]} where {hdr.name} states "
                        f"{lines} lines × {samples} samples × {bands} bands")
    return src


def read_envi(spec: str | Path) -> HSICube:
    """Read an ENVI cube (``.hdr`` + raw binary) into an ``(H, W, Bands)`` :class:`HSICube`.

    Keeps the header's wavelengths (nm), FWHM, band names and ``data ignore value`` (nodata), and the
    CRS / transform GDAL derives from ``map info``. Refused above the memory budget before reading.
    """
    src = open_envi(spec)
    try:
        cube = src.read_cube()
    finally:
        src.close()
    return cube
