"""PRISMA Level 2D (geocoded surface reflectance) products: one HDF-EOS5 file ``PRS_L2D_STD_*.he5``.

Layout followed (ASI, *PRISMA Products Specification Document*, as the EnMAP-Box
``ImportPrismaL2DAlgorithm`` and the R package ``prismaread`` read it)::

    HDFEOS/SWATHS/PRS_L2D_HCO/Data Fields/VNIR_Cube                  uint16 (rows, 66 bands, cols)
    HDFEOS/SWATHS/PRS_L2D_HCO/Data Fields/SWIR_Cube                  uint16 (rows, 173 bands, cols)
    HDFEOS/SWATHS/PRS_L2D_HCO/Data Fields/VNIR_PIXEL_L2_ERR_MATRIX   same shape: 0 ok, 1 invalid L1 pixel,
    HDFEOS/SWATHS/PRS_L2D_HCO/Data Fields/SWIR_PIXEL_L2_ERR_MATRIX   2 negative / 4 saturated after AC
    root attributes  List_Cw_Vnir, List_Fwhm_Vnir, List_Cw_Vnir_Flags (and _Swir): per band, in the
                     cube's band order (wavelength *descending*; unused bands have centre 0 / flag 0)
                     L2ScaleVnirMin/Max, L2ScaleSwirMin/Max; Epsg_Code;
                     Product_ULcorner_easting/northing (centre of the upper-left pixel); Product_StartTime

The reader keeps the bands flagged 1 with a non-zero centre, puts each detector in ascending
wavelength order and returns VNIR then SWIR (the detectors overlap near 900–1000 nm; both are kept).
Reflectance = Min + DN × (Max − Min) / 65535 per detector (float32). The grid is 30 m, north up, with
its origin half a pixel up-left of the upper-left pixel centre. Nodata: DN 0 in every band (fill); a
pixel marked 1 (invalid L1 pixel) in the error matrix of any kept band is nodata too. Codes 2 and 4
describe a value of one band (negative or saturated after atmospheric correction) and are left alone.
Read with h5py, window by window (no whole-file load).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from geolesf.errors import DataError
from geolesf.io.sensors.common import iso_time
from geolesf.io.source import CubeMeta, CubeSource

NAME = "PRISMA L2D"
FIELDS = "HDFEOS/SWATHS/PRS_L2D_HCO/Data Fields"
PIXEL = 30.0
DETECTORS = ("Vnir", "Swir")


def matches(path: Path) -> bool:
    return path.suffix.lower() == ".he5" and path.name.upper().startswith("PRS_L2D")


def _attr(attrs: Any, key: str, path: Path) -> Any:
    if key not in attrs:
        raise DataError(f"{path}: PRISMA L2D file lacks the root attribute {key}")
    value = attrs[key]
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _floats(attrs: Any, key: str, path: Path) -> np.ndarray:
    try:
        return np.asarray(_attr(attrs, key, path), dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{path}: PRISMA attribute {key} is not a list of numbers") from None


class PrismaSource(CubeSource):
    """VNIR + SWIR reflectance of a PRISMA L2D file, read window by window from HDF5."""

    def __init__(self, path: Path) -> None:
        import h5py

        self.path = str(path)
        if not path.is_file():
            raise DataError(f"{path}: PRISMA L2D file not found")
        try:
            self._fh = h5py.File(path, "r")
        except OSError as exc:
            raise DataError(f"{path}: not a readable HDF5 (PRISMA .he5) file ({' '.join(str(exc).split())})") from None
        try:
            self._setup(path)
        except (KeyError, ValueError, TypeError, OSError, RuntimeError) as exc:
            self._fh.close()
            raise DataError(f"{path}: not a readable PRISMA L2D product ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())})") from None
        except DataError:
            self._fh.close()
            raise

    def _setup(self, path: Path) -> None:
        from affine import Affine
        from rasterio.crs import CRS

        attrs = self._fh.attrs
        self._parts = []  # (cube, error matrix or None, band indices into the cube)
        wavelengths: list[float] = []
        fwhm: list[float] = []
        scale: list[float] = []
        offset: list[float] = []
        rows_cols = None
        for det in DETECTORS:
            cube = self._fh.get(f"{FIELDS}/{det.upper()}_Cube")
            if cube is None or cube.ndim != 3:
                raise DataError(f"{path}: PRISMA L2D file lacks a 3-D {FIELDS}/{det.upper()}_Cube")
            cw = _floats(attrs, f"List_Cw_{det}", path)
            fw = _floats(attrs, f"List_Fwhm_{det}", path)
            flags = _floats(attrs, f"List_Cw_{det}_Flags", path) if f"List_Cw_{det}_Flags" in attrs else np.ones_like(cw)
            if not (len(cw) == len(fw) == len(flags) == cube.shape[1]):
                raise DataError(f"{path}: {det.upper()}_Cube has {cube.shape[1]} bands but List_Cw_{det} / "
                                f"List_Fwhm_{det} list {len(cw)} / {len(fw)}")
            if rows_cols is not None and (cube.shape[0], cube.shape[2]) != rows_cols:
                raise DataError(f"{path}: VNIR and SWIR cubes cover different grids")
            rows_cols = (cube.shape[0], cube.shape[2])
            keep = [int(i) for i in np.flatnonzero((flags == 1) & (cw > 0))]
            keep.sort(key=lambda i: cw[i])
            lo = float(_attr(attrs, f"L2Scale{det}Min", path))
            hi = float(_attr(attrs, f"L2Scale{det}Max", path))
            err = self._fh.get(f"{FIELDS}/{det.upper()}_PIXEL_L2_ERR_MATRIX")
            if err is not None and err.shape != cube.shape:
                raise DataError(f"{path}: {det.upper()}_PIXEL_L2_ERR_MATRIX is {err.shape}, the cube {cube.shape}")
            self._parts.append((cube, err, keep))
            wavelengths += [float(cw[i]) for i in keep]
            fwhm += [float(fw[i]) for i in keep]
            scale += [(hi - lo) / 65535.0] * len(keep)
            offset += [lo] * len(keep)
        if not wavelengths:
            raise DataError(f"{path}: PRISMA L2D file flags no band as valid")
        self.height, self.width = rows_cols
        self.count = len(wavelengths)
        self.native_dtype = np.dtype(self._parts[0][0].dtype)
        epsg = int(float(_attr(attrs, "Epsg_Code", path)))
        self.crs = CRS.from_epsg(epsg)
        ul_e = float(_attr(attrs, "Product_ULcorner_easting", path))
        ul_n = float(_attr(attrs, "Product_ULcorner_northing", path))
        self.transform = Affine(PIXEL, 0.0, ul_e - PIXEL / 2, 0.0, -PIXEL, ul_n + PIXEL / 2)
        start = attrs.get("Product_StartTime")
        self.meta = CubeMeta(
            band_names=[f"band {i + 1} ({w:g} nm)" for i, w in enumerate(wavelengths)], wavelengths=wavelengths,
            fwhm=fwhm, scale=scale, offset=offset, nodata=0.0, sensor=NAME,
            acquired=iso_time(start.decode(errors="replace") if isinstance(start, bytes) else start),
        )
        self.quality_layers = []

    def quality_rules(self) -> list[dict[str, Any]]:
        return [{"name": f"{det.lower()} error matrix", "path": f"{self.path}:{FIELDS}/{det.upper()}_PIXEL_L2_ERR_MATRIX",
                 "rule": "1 (invalid L1 pixel) in any kept band → nodata"}
                for (_, err, _), det in zip(self._parts, DETECTORS) if err is not None]

    def _slab(self, dataset: Any, keep: list[int], r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        try:
            block = dataset[r0:r1, :, c0:c1]
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise DataError(f"{self.path}: cannot read {dataset.name} ({' '.join(str(exc).split())})") from None
        return block[:, keep, :].transpose(1, 0, 2)

    def _read_native(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        return np.concatenate([self._slab(cube, keep, r0, r1, c0, c1) for cube, _, keep in self._parts])

    def _extra_invalid(self, r0: int, r1: int, c0: int, c1: int, native: np.ndarray) -> np.ndarray | None:
        out = None
        for _, err, keep in self._parts:
            if err is None:
                continue
            hit = np.any(self._slab(err, keep, r0, r1, c0, c1) == 1, axis=0)
            out = hit if out is None else out | hit
        return out

    def close(self) -> None:
        self._fh.close()


def open_product(path: Path) -> PrismaSource:
    """The L2D reflectance cube (float32), VNIR then SWIR, with wavelengths, FWHM, scale, CRS and masks."""
    return PrismaSource(path)
