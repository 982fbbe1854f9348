"""Cubes opened lazily: :func:`geolesf.io.lazy.open_cube` → a :class:`CubeSource` that reads ``(h, w, bands)`` windows.

A source knows the cube's size, band metadata (wavelengths in nm, FWHM, names), georeferencing,
nodata value, the per-band ``scale``/``offset`` it applies and the quality layers it honours, and
reads any window on demand: memory grows with the window, not the scene. :meth:`CubeSource.read_cube`
reads the whole cube into an :class:`~geolesf.io.cube.HSICube` after the memory-budget check.

What a read returns:

- without a scale, the file's native values; with one (sensor products), float32
  ``DN × scale + offset`` (physical reflectance);
- pixels that are nodata (every band equal to the nodata value) or flagged by a quality layer hold
  the nodata value in every band, and :meth:`CubeSource.read_valid` gives the ``(h, w)`` mask.

Sources: :class:`RasterCubeSource` (anything rasterio/GDAL opens: GeoTIFF, ENVI, the rasters of
EnMAP / DESIS / AVIRIS products) and the PRISMA HDF5 source in :mod:`geolesf.io.sensors.prisma`.
:func:`geolesf.io.lazy.open_cube` picks one for a path: a sensor product (folder or metadata file)
first, then ENVI, then any raster. MATLAB ``.mat`` files have no lazy reader (use
:func:`geolesf.io.hsi.read_cube`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.errors import DataError
from geolesf.io.cube import HSICube, check_budget

Window = Any
"""``((row_start, row_stop), (col_start, col_stop))`` or a ``rasterio.windows.Window``; None = all."""


@dataclass
class QualityLayer:
    """A raster on the cube's grid whose flagged pixels become nodata."""

    path: Path
    name: str
    flagged: Callable[[np.ndarray], np.ndarray]
    """``(bands, h, w)`` layer values → ``(h, w)`` bool, True where the pixel fails."""
    rule: str
    """The rule in words, recorded in ``HSICube.quality``."""


@dataclass
class CubeMeta:
    """Band and product metadata a source attaches to what it reads."""

    band_names: list[str] = field(default_factory=list)
    wavelengths: list[float] | None = None
    fwhm: list[float] | None = None
    scale: list[float] | None = None
    offset: list[float] | None = None
    nodata: float | None = None
    acquired: str | None = None
    sensor: str | None = None


def _rows_cols(window: Window, height: int, width: int) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) of a window, checked against the cube size."""
    if window is None:
        return 0, height, 0, width
    if hasattr(window, "row_off"):
        r0, c0 = int(window.row_off), int(window.col_off)
        r1, c1 = r0 + int(window.height), c0 + int(window.width)
    else:
        try:
            (r0, r1), (c0, c1) = ((int(a), int(b)) for a, b in window)
        except (TypeError, ValueError):
            raise DataError(f"window {window!r}: expected ((row_start, row_stop), (col_start, col_stop))") from None
    if not (0 <= r0 < r1 <= height and 0 <= c0 < c1 <= width):
        raise DataError(f"window rows {r0}:{r1}, cols {c0}:{c1} is outside the {height}×{width} cube")
    return r0, r1, c0, c1


class CubeSource:
    """The interface of a lazily opened cube; subclasses implement :meth:`_read_native`."""

    path: str
    height: int
    width: int
    count: int
    native_dtype: np.dtype
    crs: Any = None
    transform: Any = None
    meta: CubeMeta
    quality_layers: list[QualityLayer]

    # -- what subclasses provide ------------------------------------------------------------
    def _read_native(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """``(bands, h, w)`` native values of the window."""
        raise NotImplementedError

    def _extra_invalid(self, r0: int, r1: int, c0: int, c1: int, native: np.ndarray) -> np.ndarray | None:
        """``(h, w)`` bool of pixels a product's own quality data flags (listed by :meth:`quality_rules`)."""
        return None

    def close(self) -> None:
        """Release the open file."""

    # -- shared ------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return self.height, self.width, self.count

    @property
    def dtype(self) -> np.dtype:
        """dtype of what :meth:`read` returns (float32 when a scale is applied)."""
        return np.dtype(np.float32) if self.meta.scale is not None else np.dtype(self.native_dtype)

    @property
    def wavelengths(self) -> list[float] | None:
        return self.meta.wavelengths

    @property
    def nodata(self) -> float | None:
        return self.meta.nodata

    def __enter__(self) -> CubeSource:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def quality_rules(self) -> list[dict[str, Any]]:
        """The quality layers honoured, as recorded in ``HSICube.quality``."""
        return [{"name": q.name, "path": str(q.path), "rule": q.rule} for q in self.quality_layers]

    def _invalid(self, r0: int, r1: int, c0: int, c1: int, native: np.ndarray) -> tuple[np.ndarray | None, int]:
        """(``(h, w)`` invalid mask or None, number of valid-data pixels that quality flags remove)."""
        invalid = None
        nodata = _representable(self.meta.nodata, native.dtype)
        if nodata is not None:
            invalid = np.all(native == nodata, axis=0)
        flagged = self._extra_invalid(r0, r1, c0, c1, native)
        for layer in self.quality_layers:
            hit = layer.flagged(_read_layer(layer, r0, r1, c0, c1, native.shape[1:]))
            flagged = hit if flagged is None else flagged | hit
        if flagged is None:
            return invalid, 0
        extra = int((flagged & ~invalid).sum()) if invalid is not None else int(flagged.sum())
        return (flagged if invalid is None else invalid | flagged), extra

    def read(self, window: Window = None) -> np.ndarray:
        """``(h, w, bands)`` values of ``window`` (physical when scaled); invalid pixels hold nodata."""
        data, _ = self._read_checked(window)
        return data

    def read_valid(self, window: Window = None) -> np.ndarray:
        """``(h, w)`` bool: True where the pixel is neither nodata nor flagged by a quality layer."""
        r0, r1, c0, c1 = _rows_cols(window, self.height, self.width)
        invalid, _ = self._invalid(r0, r1, c0, c1, self._read_native(r0, r1, c0, c1))
        return np.ones((r1 - r0, c1 - c0), bool) if invalid is None else ~invalid

    def _read_checked(self, window: Window) -> tuple[np.ndarray, tuple[np.ndarray | None, int]]:
        r0, r1, c0, c1 = _rows_cols(window, self.height, self.width)
        native = self._read_native(r0, r1, c0, c1)
        invalid, flagged = self._invalid(r0, r1, c0, c1, native)
        meta = self.meta
        if meta.scale is not None:
            gain = np.asarray(meta.scale, np.float32)[:, None, None]
            off = np.asarray(meta.offset if meta.offset is not None else [0.0] * self.count, np.float32)[:, None, None]
            data = native.astype(np.float32) * gain + off
        else:
            data = native
        if invalid is not None and invalid.any():
            fill = _representable(meta.nodata, data.dtype)
            data = np.where(invalid[None], np.zeros((), data.dtype) if fill is None else fill, data)
        return np.ascontiguousarray(data.transpose(1, 2, 0)), (invalid, flagged)

    def read_cube(self) -> HSICube:
        """The whole cube in memory (refused above the memory budget before anything is read)."""
        check_budget(self.height * self.width * self.count * self.dtype.itemsize, self.path, self.shape)
        data, (invalid, flagged) = self._read_checked(None)
        meta = self.meta
        quality: dict[str, Any] = {}
        rules = self.quality_rules()
        if rules or invalid is not None:
            quality = {"layers": rules, "invalid_pixels": 0 if invalid is None else int(invalid.sum()),
                       "flagged_by_quality_layers": flagged}
        names = meta.band_names if len(meta.band_names) == self.count else [f"band_{i + 1}" for i in range(self.count)]
        return HSICube(
            data=data, band_names=list(names), wavelengths=meta.wavelengths, nodata=meta.nodata, crs=self.crs,
            transform=self.transform, path=self.path, fwhm=meta.fwhm, scale=meta.scale, offset=meta.offset,
            valid=None if invalid is None or not invalid.any() else ~invalid, quality=quality,
            acquired=meta.acquired, sensor=meta.sensor,
        )


def _representable(nodata: float | None, dtype: np.dtype) -> Any:
    """``nodata`` as a value of ``dtype``, or None when it is absent, NaN or no value of that type."""
    if nodata is None or np.isnan(nodata):
        return None
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        if not (float(nodata).is_integer() and info.min <= nodata <= info.max):
            return None
    elif np.dtype(dtype).kind == "f" and np.isfinite(nodata) and abs(float(nodata)) > float(np.finfo(dtype).max):
        return None
    return np.asarray(nodata).astype(dtype)


def _rasterio_errors() -> tuple[type[BaseException], ...]:
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import RasterioError

    return RasterioError, CPLE_BaseError, OSError


def _read_layer(layer: QualityLayer, r0: int, r1: int, c0: int, c1: int, shape: tuple[int, ...]) -> np.ndarray:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(layer.path) as ds:
                values = ds.read(window=((r0, r1), (c0, c1)), boundless=False)
    except _rasterio_errors() as exc:
        raise DataError(f"{layer.path}: cannot read the {layer.name} quality layer ({' '.join(str(exc).split())})") from None
    if values.shape[1:] != tuple(shape):
        raise DataError(f"{layer.path}: the {layer.name} quality layer is not on the cube's grid")
    return values


def _float_list(values: Sequence[Any] | None, n: int) -> list[float] | None:
    if values is None:
        return None
    out = [float(v) for v in values]
    return out if len(out) == n else None


class RasterCubeSource(CubeSource):
    """A cube any rasterio/GDAL driver opens (GeoTIFF, ENVI, ...), read window by window.

    ``meta`` overrides what the file itself says (a product's XML beats the GeoTIFF tags); without
    it, wavelengths come from per-band ``wavelength`` tags, names from band descriptions and nodata
    from the file. ``quality_layers`` are rasters on the same grid whose flagged pixels become nodata.
    """

    def __init__(self, path: str | Path, meta: CubeMeta | None = None,
                 quality_layers: Sequence[QualityLayer] = (), what: str = "raster",
                 driver: str | None = None) -> None:
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning

        self.path = str(path)
        p = Path(path)
        if p.is_dir():
            raise DataError(f"{p}: is a folder, expected a file ({what})")
        if not p.is_file():
            raise DataError(f"{p}: {what} file not found")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._ds = rasterio.open(p, driver=driver) if driver else rasterio.open(p)
        except _rasterio_errors() as exc:
            raise DataError(f"{p}: cannot be read as a raster, truncated or corrupt? "
                            f"({' '.join(str(exc).split())})") from None
        ds = self._ds
        self.height, self.width, self.count = ds.height, ds.width, ds.count
        if len(set(ds.dtypes)) != 1:
            ds.close()
            raise DataError(f"{p}: bands of different pixel types ({', '.join(sorted(set(ds.dtypes)))})")
        self.native_dtype = np.dtype(ds.dtypes[0])
        self.crs = ds.crs
        self.transform = None if ds.transform.is_identity else ds.transform
        self.meta = meta or CubeMeta()
        if not self.meta.band_names:
            self.meta.band_names = [d or f"band_{i + 1}" for i, d in enumerate(ds.descriptions)]
        if meta is None:
            self.meta.nodata = ds.nodata
            self.meta.wavelengths = _tag_wavelengths(ds)
        for name in ("wavelengths", "fwhm", "scale", "offset"):
            values = getattr(self.meta, name)
            if values is not None and len(values) != self.count:
                ds.close()
                raise DataError(f"{p}: {len(values)} {name} for {self.count} bands")
        self.quality_layers = list(quality_layers)

    def _read_native(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        try:
            return self._ds.read(window=((r0, r1), (c0, c1)))
        except _rasterio_errors() as exc:
            raise DataError(f"{self.path}: cannot read the raster, truncated or corrupt? "
                            f"({' '.join(str(exc).split())})") from None

    def close(self) -> None:
        self._ds.close()


def _tag_wavelengths(ds: Any) -> list[float] | None:
    """Per-band ``wavelength`` tags (as :func:`geolesf.io.writers.write_cube` writes them), in nm."""
    out: list[float] = []
    for b in range(1, ds.count + 1):
        try:
            out.append(float(ds.tags(b)["wavelength"]))
        except (KeyError, TypeError, ValueError):
            return None
    return out
