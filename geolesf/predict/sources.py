"""Windowed scene readers for the tiled predictor: a rasterio file or an in-memory/dask array.

Both expose the same small interface — size, band count, dtype, CRS, transform and
``read(row0, row1, col0, col1) -> (data (bands, h, w), valid (h, w) bool)`` — so the predictor
never knows where pixels come from. Validity follows, in order: a ``nodata`` override given by
the user (a pixel is invalid when *all* its bands equal it), else the dataset's own mask (GDAL:
per-dataset mask, alpha band, or the nodata value; a pixel is valid when any band is valid).
On every path a pixel with a NaN or ±Inf in any band is nodata as well; such values are replaced
by 0 in the returned data so that they never reach the model (not even as a neighbour in a patch).
A :class:`UserWarning` says so once per source. An alpha band is used as mask and never fed to the
model.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.errors import DataError
from geolesf.io.cog import acquired_iso as _cog_acquired


def _override_valid(data: np.ndarray, nodata: float) -> np.ndarray:
    return ~np.all(data == nodata, axis=0)


def finite_pixels(data: np.ndarray) -> np.ndarray | None:
    """``(h, w)`` bool: pixels whose bands are all finite; None when every pixel is (or ints)."""
    if data.dtype.kind not in "fc":
        return None
    finite = np.isfinite(data).all(axis=0)
    return None if finite.all() else finite


def mask_nonfinite(data: np.ndarray, valid: np.ndarray, name: str, warned: list[bool] | None = None
                   ) -> tuple[np.ndarray, np.ndarray, int]:
    """NaN/±Inf pixels → invalid, their values → 0; returns ``(data, valid, count of such pixels)``."""
    finite = finite_pixels(data)
    if finite is None:
        return data, valid, 0
    count = int((~finite).sum())
    data = np.where(np.isfinite(data), data, np.zeros((), data.dtype))
    if warned is None or not warned[0]:
        warnings.warn(f"{name}: NaN/±Inf pixels are treated as nodata (not classified)", UserWarning,
                      stacklevel=3)
        if warned is not None:
            warned[0] = True
    return data, valid & finite, count


def _read_error(path: Path, exc: Exception) -> DataError:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return DataError(f"{path}: cannot read the raster, truncated or corrupt? ({msg})")


class RasterioSource:
    """A raster file opened once; windows read on demand (memory ∝ window, not scene)."""

    def __init__(self, path: str | Path, nodata: float | None = None) -> None:
        import rasterio
        from rasterio.enums import ColorInterp, MaskFlags
        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

        self.path = Path(path)
        if self.path.is_dir():
            raise DataError(f"{self.path}: is a folder, expected a file (the scene raster)")
        if not self.path.is_file():
            raise DataError(f"{self.path}: scene not found")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._ds = rasterio.open(self.path)
        except (RasterioIOError, rasterio.errors.RasterioError, OSError) as exc:
            raise DataError(f"{self.path}: cannot be opened as a raster ({' '.join(str(exc).split())})") from None
        ds = self._ds
        self.alpha = [i + 1 for i, ci in enumerate(ds.colorinterp) if ci == ColorInterp.alpha]
        self.indexes = [i for i in range(1, ds.count + 1) if i not in self.alpha]
        self.height, self.width = ds.height, ds.width
        self.dtype = np.dtype(ds.dtypes[self.indexes[0] - 1]) if self.indexes else np.dtype("uint8")
        self.crs = ds.crs
        self.transform = ds.transform
        self.source_nodata = ds.nodata
        self.nodata = nodata
        self.name = self.path.name
        self.acquired = _cog_acquired(ds.tags().get("TIFFTAG_DATETIME"))
        self.has_mask = any(MaskFlags.all_valid not in flags for flags in ds.mask_flag_enums)
        self.nonfinite_pixels = 0
        self._warned = [False]

    @property
    def count(self) -> int:
        return len(self.indexes)

    def identity(self) -> dict[str, Any]:
        st = self.path.stat()
        return {"path": str(self.path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def read(self, r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        from rasterio._err import CPLE_BaseError
        from rasterio.errors import RasterioError
        from rasterio.windows import Window

        win = Window(c0, r0, c1 - c0, r1 - r0)
        try:
            data = self._ds.read(self.indexes, window=win)
            if self.nodata is not None:
                valid = _override_valid(data, self.nodata)
            elif self.has_mask:
                valid = self._ds.dataset_mask(window=win) > 0
            else:
                valid = np.ones(data.shape[1:], dtype=bool)
        except (RasterioError, CPLE_BaseError, OSError) as exc:
            raise _read_error(self.path, exc) from None
        data, valid, n = mask_nonfinite(data, valid, self.name, self._warned)
        self.nonfinite_pixels += n
        return data, valid

    def close(self) -> None:
        self._ds.close()


class ArraySource:
    """An ``xarray.DataArray`` (``(band, y, x)``, possibly dask-backed) or a numpy array.

    CRS/transform come from rioxarray's ``.rio`` accessor when present; nodata from
    ``.rio.nodata`` / ``_FillValue`` unless overridden.
    """

    def __init__(self, array: Any, nodata: float | None = None, crs: Any = None, transform: Any = None) -> None:
        self.array = array
        if array.ndim == 2:
            array = array[None]
            self.array = array
        if array.ndim != 3:
            raise DataError(f"array source must be (bands, y, x), found shape {tuple(array.shape)}")
        self.height, self.width = int(array.shape[1]), int(array.shape[2])
        self.dtype = np.dtype(array.dtype)
        self.crs, self.transform, self.source_nodata = crs, transform, None
        rio = getattr(array, "rio", None)
        if rio is not None:
            try:
                self.crs = self.crs if self.crs is not None else rio.crs
                self.transform = self.transform if self.transform is not None else rio.transform()
                self.source_nodata = rio.nodata
            except Exception:
                pass
        if self.source_nodata is None and hasattr(array, "attrs"):
            self.source_nodata = array.attrs.get("_FillValue", array.attrs.get("nodata"))
        self.nodata = nodata if nodata is not None else self.source_nodata
        self.name = str(getattr(array, "name", None) or "array")
        self.alpha: list[int] = []
        self.nonfinite_pixels = 0
        self._warned = [False]

    @property
    def count(self) -> int:
        return int(self.array.shape[0])

    def identity(self) -> dict[str, Any]:
        return {"array": self.name, "shape": [self.count, self.height, self.width]}

    def read(self, r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        data = np.asarray(self.array[:, r0:r1, c0:c1])
        if self.nodata is not None and not (isinstance(self.nodata, float) and np.isnan(self.nodata)):
            valid = _override_valid(data, self.nodata)
        else:
            valid = np.ones(data.shape[1:], bool)
        data, valid, n = mask_nonfinite(data, valid, self.name, self._warned)
        self.nonfinite_pixels += n
        return data, valid

    def close(self) -> None:
        pass


def open_source(source: Any, nodata: float | None = None) -> RasterioSource | ArraySource:
    if isinstance(source, (str, Path)):
        return RasterioSource(source, nodata)
    if hasattr(source, "ndim") and hasattr(source, "shape"):
        return ArraySource(source, nodata)
    raise DataError(f"cannot read a scene from {type(source).__name__}: give a raster path or an "
                    "xarray.DataArray / numpy array shaped (bands, y, x)")
