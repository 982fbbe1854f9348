"""Hyperspectral cube and label-map readers.

Every reader returns the same types: :class:`HSICube` (``data`` is ``(H, W, Bands)`` in the file's
native dtype) and :class:`LabelMap` (``data`` is ``(H, W)`` integer). Georeferencing (CRS,
affine transform, nodata) is kept when the source has it; MATLAB files never do.

Supported sources (``spec`` is a path, optionally ``PATH:KEY`` for ``.mat`` files):

- MATLAB v5 ``.mat`` (scipy) and v7.3 ``.mat`` (HDF5 via h5py; MATLAB stores arrays column-major,
  so h5py sees every array with its axes reversed and we transpose it back). Without a key the
  cube is the only array with ≥ 3 dimensions and the labels the only 2-D integer(-valued) array.
- ENVI: a ``.hdr`` header beside a raw binary file, interleave bsq / bil / bip, read through GDAL so
  ``map info`` gives the CRS and transform (:mod:`geolesf.io.envi`).
- Sensor products (EnMAP L2A, DESIS L2A, PRISMA L2D, AVIRIS-NG / AVIRIS-3 L2): the product folder or
  its metadata file (:mod:`geolesf.io.sensors`); reflectance as float32, wavelengths, FWHM, nodata,
  quality masks, CRS and acquisition time.
- Anything rasterio opens (GeoTIFF, PNG, ...): bands are moved last.

Relative paths that do not exist from the working directory are also looked up relative to the
folder that holds the ``geolesf`` package, so configs can name ``geolesf/embedded/...``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.errors import DataError
from geolesf.io import envi
from geolesf.io.lazy import open_cube  # noqa: F401  (re-exported: the lazy reader beside read_cube)
from geolesf.io.cube import (
    HSICube,
    LabelMap,
    check_budget,
    require_file,
    resolve_path,
    split_spec,
)

MAT_SUFFIXES = (".mat",)


# bytes per element of a MATLAB class as loadmat returns it (cell/struct/object: a generous guess)
_MAT_ITEMSIZE = {
    "double": 8, "single": 4, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "int32": 4, "uint32": 4,
    "int64": 8, "uint64": 8, "logical": 1, "char": 4, "sparse": 8,
}


def _describe_whos(variables: list) -> str:
    return ", ".join(f"{n} {tuple(s)} {c}" for n, s, c in variables) or "nothing"


def _load_mat(path: Path) -> dict[str, np.ndarray]:
    """All numeric arrays of a .mat file, v5 or v7.3, in MATLAB's axis order."""
    import h5py

    if h5py.is_hdf5(str(path)):
        out: dict[str, np.ndarray] = {}
        try:
            fh = h5py.File(path, "r")
        except OSError as exc:
            raise DataError(f"{path}: not a readable MATLAB v7.3 file ({' '.join(str(exc).split())})") from None
        try:
            with fh:
                total = 0
                for key, obj in fh.items():
                    if isinstance(obj, h5py.Dataset) and not key.startswith("#") and obj.dtype.kind in "biuf":
                        total += int(np.prod(obj.shape, dtype=np.int64)) * obj.dtype.itemsize
                        check_budget(total, f"{path}:{key}", obj.shape[::-1])
                for key, obj in fh.items():
                    if key.startswith("#") or not isinstance(obj, h5py.Dataset):
                        continue
                    arr = obj[()]
                    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
                        continue
                    # h5py sees MATLAB's column-major arrays with the axes reversed.
                    out[key] = np.ascontiguousarray(arr.T)
        except (OSError, KeyError, ValueError, RuntimeError) as exc:  # HDF5 errors on broken files
            raise DataError(f"{path}: not a readable MATLAB v7.3 (HDF5) file "
                            f"({' '.join(str(exc).split())})") from None
        return out
    import scipy.io

    try:
        # variable headers (name, shape, class) only: sizes are checked before anything is decompressed
        variables = scipy.io.whosmat(str(path))
    except Exception as exc:  # noqa: BLE001 - scipy raises several types for broken files
        raise DataError(f"{path}: not a readable MATLAB file ({' '.join(str(exc).split())})") from None
    total = 0
    for name, shape, mclass in variables:
        total += int(np.prod(shape, dtype=np.int64)) * _MAT_ITEMSIZE.get(mclass, 8)
        check_budget(total, f"{path}:{name}", shape)
    try:
        raw = scipy.io.loadmat(str(path))
    except MemoryError:
        raise DataError(f"{path}: out of memory while loading; the file holds {_describe_whos(variables)}") from None
    except Exception as exc:  # noqa: BLE001 - scipy raises several types for broken files
        raise DataError(f"{path}: not a readable MATLAB file ({' '.join(str(exc).split())})") from None
    return {
        k: v for k, v in raw.items()
        if not k.startswith("__") and isinstance(v, np.ndarray) and v.dtype.kind in "biuf"
    }


def _is_integer_valued(arr: np.ndarray) -> bool:
    if arr.dtype.kind in "biu":
        return True
    if arr.dtype.kind == "f" and arr.size:
        return bool(np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)))
    return False


def _describe(arrays: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{k} {tuple(v.shape)} {v.dtype}" for k, v in arrays.items()) or "none"


def _pick_mat_key(path: Path, arrays: dict[str, np.ndarray], key: str | None, kind: str) -> str:
    if key is not None:
        if key not in arrays:
            raise DataError(
                f"{path}: no numeric array named '{key}'; available keys: {_describe(arrays)}"
            )
        return key
    if kind == "cube":
        candidates = [k for k, v in arrays.items() if v.ndim >= 3]
        what = "array with 3 or more dimensions"
    else:
        candidates = [k for k, v in arrays.items() if v.ndim == 2 and v.dtype.kind in "biu"]
        if not candidates:
            candidates = [k for k, v in arrays.items() if v.ndim == 2 and _is_integer_valued(v)]
        what = "2-D integer array"
    if len(candidates) != 1:
        found = "none" if not candidates else f"{len(candidates)} ({', '.join(candidates)})"
        raise DataError(
            f"{path}: cannot choose the {kind} key, expected exactly one {what}, found {found}; "
            f"name it as {path}:KEY (available keys: {_describe(arrays)})"
        )
    return candidates[0]


def _read_mat_cube(path: Path, key: str | None) -> HSICube:
    arrays = _load_mat(path)
    key = _pick_mat_key(path, arrays, key, "cube")
    data = arrays[key]
    if data.ndim != 3:
        raise DataError(f"{path}:{key} has shape {data.shape}; expected a 3-D (H, W, Bands) cube")
    names = [f"band_{i + 1}" for i in range(data.shape[2])]
    return HSICube(data=data, band_names=names, path=f"{path}:{key}")


def _read_mat_labels(path: Path, key: str | None) -> LabelMap:
    arrays = _load_mat(path)
    key = _pick_mat_key(path, arrays, key, "labels")
    return LabelMap(data=_as_label_array(arrays[key], f"{path}:{key}"), path=f"{path}:{key}")


# --------------------------------------------------------------------------------------------
# rasterio


def _read_rasterio(path: Path) -> tuple[np.ndarray, Any, list[str], list[float] | None]:
    import rasterio
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError

    require_file(path, "raster")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                check_budget(src.count * src.height * src.width * np.dtype(src.dtypes[0]).itemsize, str(path),
                             (src.height, src.width, src.count))
                arr = src.read()
                names = [d or f"band_{i + 1}" for i, d in enumerate(src.descriptions)]
                wavelengths: list[float] | None = []
                for b in range(1, src.count + 1):
                    tag = src.tags(b).get("wavelength")
                    try:
                        wavelengths.append(float(tag))  # type: ignore[union-attr]
                    except (TypeError, ValueError):
                        wavelengths = None
                        break
                meta = {
                    "nodata": src.nodata,
                    "crs": src.crs,
                    "transform": None if src.transform.is_identity else src.transform,
                }
    except (RasterioIOError, RasterioError, CPLE_BaseError) as exc:
        raise DataError(f"{path}: cannot be read as a raster, truncated or corrupt? "
                        f"({' '.join(str(exc).split())})") from None
    return arr, meta, names, wavelengths


def read_raster_cube(path: str | Path) -> HSICube:
    path = resolve_path(path)
    arr, meta, names, wavelengths = _read_rasterio(path)
    data = np.ascontiguousarray(arr.transpose(1, 2, 0))
    return HSICube(data=data, band_names=names, wavelengths=wavelengths, path=str(path), **meta)


# --------------------------------------------------------------------------------------------
# public entry points


def check_finite(cube: HSICube) -> None:
    """Raise :class:`DataError` naming the band(s) that hold NaN or Inf values."""
    data = cube.data
    if data.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(data).reshape(-1, data.shape[2]).all(axis=0)
    if bad.any():
        idx = np.flatnonzero(bad)
        shown = ", ".join(
            f"{i + 1} ({cube.band_names[i]})" if i < len(cube.band_names) else str(i + 1)
            for i in idx[:10]
        )
        more = f" and {len(idx) - 10} more" if len(idx) > 10 else ""
        raise DataError(
            f"{cube.path}: NaN or Inf values in {len(idx)} band(s): {shown}{more}; "
            "fill or drop these bands first"
        )


def read_cube(spec: str | Path, check: bool = True) -> HSICube:
    """Read a hyperspectral cube: a sensor product (:mod:`geolesf.io.sensors`: folder or metadata
    file), ``.mat`` (``PATH:KEY``), ENVI (through GDAL) or a rasterio raster.

    ``check`` rejects NaN/Inf values (naming the bands) with :class:`DataError`. For the lazy,
    window-by-window reader see :func:`open_cube` (:mod:`geolesf.io.lazy`).
    """
    from geolesf.io.sensors import detect

    path, key = split_spec(spec)
    product = detect(path) if key is None else None
    if product is not None:
        with product.open(path) as src:
            cube = src.read_cube()
    elif path.suffix.lower() in MAT_SUFFIXES:
        require_file(path, "MATLAB cube")
        cube = _read_mat_cube(path, key)
    elif key is not None:
        raise DataError(f"{spec}: ':KEY' is only meaningful for .mat files")
    elif envi.is_envi(path):
        cube = envi.read_envi(path)
    else:
        cube = read_raster_cube(path)
    if cube.data.ndim != 3 or min(cube.data.shape) < 1:
        raise DataError(f"{cube.path}: expected an (H, W, Bands) cube, found shape {cube.data.shape}")
    if cube.data.dtype.kind not in "biuf":
        raise DataError(f"{cube.path}: unsupported cube dtype {cube.data.dtype}")
    if check:
        check_finite(cube)
    return cube


def read_cube_for_prediction(spec: str | Path) -> tuple[HSICube, np.ndarray | None]:
    """A cube to classify whole: pixels with NaN/±Inf in any band are nodata, as in the tiled predictor.

    Returns ``(cube, valid)``: the non-finite values replaced by 0 (they never reach the model) and the
    ``(H, W)`` mask of pixels to classify (finite, and not nodata / quality-flagged in a sensor product),
    or None when every pixel is. Warns with the count of non-finite pixels.
    """
    cube = read_cube(spec, check=False)
    data = cube.data
    if data.dtype.kind not in "fc":
        return cube, cube.valid
    finite = np.isfinite(data)
    valid = finite.all(axis=2)
    if valid.all():
        return cube, cube.valid
    bad = int((~valid).sum())
    warnings.warn(f"{cube.path}: {bad:,} NaN/±Inf pixels are treated as nodata (not classified)", UserWarning,
                  stacklevel=2)
    cube.data = np.where(finite, data, np.zeros((), data.dtype))
    return cube, valid if cube.valid is None else valid & cube.valid


def _as_label_array(arr: np.ndarray, where: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise DataError(f"{where}: labels must be a 2-D map, found shape {arr.shape}")
    if arr.dtype.kind == "b":
        return arr.astype(np.int32)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int32)
    if arr.dtype.kind == "f":
        if not _is_integer_valued(arr):
            raise DataError(f"{where}: labels must be integers, found non-integer float values")
        return arr.astype(np.int32)
    raise DataError(f"{where}: labels must be integers, found dtype {arr.dtype}")


def read_labels(spec: str | Path) -> LabelMap:
    """Read a 2-D integer label map from ``.mat`` (``PATH:KEY``), ENVI, GeoTIFF or PNG."""
    path, key = split_spec(spec)
    if path.suffix.lower() in MAT_SUFFIXES:
        require_file(path, "MATLAB label")
        return _read_mat_labels(path, key)
    if key is not None:
        raise DataError(f"{spec}: ':KEY' is only meaningful for .mat files")
    if envi.is_envi(path):
        cube = envi.read_envi(path)
        if cube.bands != 1:
            raise DataError(f"{cube.path}: a label map must have 1 band, found {cube.bands}")
        return LabelMap(data=_as_label_array(cube.data[:, :, 0], cube.path), nodata=cube.nodata,
                        path=cube.path)
    arr, meta, _, _ = _read_rasterio(path)
    if arr.shape[0] != 1:
        raise DataError(f"{path}: a label map must have 1 band, found {arr.shape[0]}")
    return LabelMap(data=_as_label_array(arr[0], str(path)), path=str(path), **meta)
