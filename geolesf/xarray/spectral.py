"""Spectral helpers of the ``.geolesf`` xarray accessor: band selection by wavelength, PCA, indices.

All of them take a ``(band, y, x)`` DataArray (any band dimension name) and return a DataArray with
the same ``y``/``x`` coordinates, ``rio.crs`` and ``rio.transform()``; nodata pixels (the input's
``rio.nodata`` / ``_FillValue``, or NaN) become NaN in float results. Dask-backed inputs stay lazy,
except for the small pixel sample PCA is fitted on.

Wavelengths are read from a coordinate on the band dimension (default ``wavelength``, in the unit
of that coordinate, usually nm), e.g. ``da.assign_coords(wavelength=("band", centres_nm))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from geolesf.errors import ConfigError, DataError


def _prepared(obj: Any) -> tuple[xr.DataArray, str, tuple[Any, Any, Any]]:
    from geolesf.xarray.georef import as_band_yx, georef

    arr, band_dim = as_band_yx(obj)
    return arr, band_dim, georef(arr)


def _finish(out: xr.DataArray, geo: tuple[Any, Any, Any]) -> xr.DataArray:
    from geolesf.xarray.georef import _write_georef

    crs, transform, _ = geo
    return _write_georef(out, crs, transform, np.nan)


def _masked_float(arr: xr.DataArray, nodata: Any) -> xr.DataArray:
    """``float32`` with nodata values (and NaN) as NaN; coordinates kept, attributes dropped."""
    out = arr.astype(np.float32)
    if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
        out = out.where(arr != nodata)
    out.attrs = {}
    return out


def _drop_band_coords(arr: xr.DataArray, band_dim: str) -> xr.DataArray:
    """Drop the band coordinates (labels, wavelengths) and scalar ones; ``_finish`` rewrites the CRS."""
    names = [k for k, v in arr.coords.items() if k == band_dim or band_dim in v.dims or v.dims == ()]
    return arr.drop_vars(names)


def _wavelengths(arr: xr.DataArray, band_dim: str, coord: str) -> np.ndarray:
    if coord in arr.coords and arr.coords[coord].dims == (band_dim,):
        return np.asarray(arr.coords[coord].values, dtype=np.float64)
    raise DataError(f"no '{coord}' coordinate on the '{band_dim}' dimension; add one with "
                    f"da.assign_coords({coord}=('{band_dim}', values))")


class SpectralMixin:
    """Mixed into the accessors; ``self._array()`` is the ``(band, y, x)`` DataArray."""

    def _array(self) -> xr.DataArray:  # pragma: no cover - overridden
        raise NotImplementedError

    # -------------------------------------------------------------------------------- selection
    def sel_wavelength(self, wavelengths: float | Sequence[float] | slice, *, coord: str = "wavelength",
                       tolerance: float | None = None) -> xr.DataArray:
        """Bands nearest to ``wavelengths`` (a value or a list, in order), or all bands in a ``slice(lo, hi)``.

        ``tolerance``: refuse a requested wavelength farther than this from every band. The band
        dimension is kept (a single wavelength gives one band).
        """
        arr, band_dim, _ = _prepared(self._array())
        wl = _wavelengths(arr, band_dim, coord)
        if isinstance(wavelengths, slice):
            lo = -np.inf if wavelengths.start is None else float(wavelengths.start)
            hi = np.inf if wavelengths.stop is None else float(wavelengths.stop)
            idx = np.nonzero((wl >= lo) & (wl <= hi))[0]
            if idx.size == 0:
                raise DataError(f"no band between {lo} and {hi} ({coord} spans {wl.min():g}..{wl.max():g})")
        else:
            wanted = np.atleast_1d(np.asarray(wavelengths, dtype=np.float64))
            idx = np.abs(wl[None, :] - wanted[:, None]).argmin(1)
            if tolerance is not None:
                far = np.abs(wl[idx] - wanted) > tolerance
                if far.any():
                    raise DataError(f"{coord} {wanted[far].tolist()}: no band within {tolerance} "
                                    f"({coord} spans {wl.min():g}..{wl.max():g})")
        return arr.isel({band_dim: idx})

    def _band(self, key: Any, coord: str) -> xr.DataArray:
        """One band: a float is a wavelength (nearest band), anything else a label on the band dimension."""
        arr, band_dim, geo = _prepared(self._array())
        if isinstance(key, float):
            one = self.sel_wavelength(key, coord=coord).isel({band_dim: 0})
        else:
            labels = arr.coords[band_dim].values.tolist() if band_dim in arr.coords else list(range(arr.sizes[band_dim]))
            if key not in labels:
                raise DataError(f"band {key!r} not found on '{band_dim}' (labels: {labels}); "
                                "give a float to select by wavelength")
            one = arr.sel({band_dim: key}) if band_dim in arr.coords else arr.isel({band_dim: key})
        return _masked_float(_drop_band_coords(one, band_dim), geo[2])

    # -------------------------------------------------------------------------------- indices
    def normalized_difference(self, a: Any, b: Any, *, name: str = "nd", coord: str = "wavelength") -> xr.DataArray:
        """``(A - B) / (A + B)`` as float32 ``(y, x)``; NaN where either band is nodata or ``A + B = 0``.

        ``a``/``b``: a float selects the band nearest that wavelength, an int or str a band label
        (``rioxarray.open_rasterio`` labels bands 1, 2, 3, …).
        """
        geo = _prepared(self._array())[2]
        A, B = self._band(a, coord), self._band(b, coord)
        total = A + B
        out = ((A - B) / total.where(total != 0)).astype(np.float32).rename(name)
        out.attrs = {"long_name": name, "bands": f"{a!r}, {b!r}"}
        return _finish(out, geo)

    def ndvi(self, red: Any = 665.0, nir: Any = 842.0, *, coord: str = "wavelength") -> xr.DataArray:
        """Normalized difference vegetation index ``(NIR - red) / (NIR + red)``.

        Defaults are the Sentinel-2 B4/B8 centre wavelengths in nm (nearest band used); for a
        multispectral GeoTIFF pass band labels, e.g. ``ndvi(red=3, nir=4)``.
        """
        return self.normalized_difference(nir, red, name="ndvi", coord=coord)

    def ndwi(self, green: Any = 560.0, nir: Any = 842.0, *, coord: str = "wavelength") -> xr.DataArray:
        """McFeeters' normalized difference water index ``(green - NIR) / (green + NIR)``."""
        return self.normalized_difference(green, nir, name="ndwi", coord=coord)

    # -------------------------------------------------------------------------------- PCA
    def pca(self, n_components: int = 3, *, sample: int = 200_000) -> xr.DataArray:
        """Principal components ``(component, y, x)`` float32 of the band vectors.

        Fitted (mean, then SVD of the centred pixels) on the valid pixels of a regular grid sample
        of at most ``sample`` pixels, the whole scene when it is smaller; applied lazily to a dask
        input. Attributes: ``explained_variance_ratio``, ``mean`` and ``components`` (bands order).
        Pixels with any nodata/NaN band are NaN. The sign of each component is fixed so that its
        largest-magnitude loading is positive.
        """
        arr, band_dim, geo = _prepared(self._array())
        n_bands = arr.sizes[band_dim]
        if not 1 <= n_components <= n_bands:
            raise ConfigError(f"n_components must be in [1, {n_bands}], found {n_components}")
        x = _masked_float(arr, geo[2])
        ydim, xdim = arr.dims[1], arr.dims[2]
        step = max(1, int(np.ceil(np.sqrt(arr.sizes[ydim] * arr.sizes[xdim] / max(1, sample)))))
        pix = np.asarray(x.isel({ydim: slice(None, None, step), xdim: slice(None, None, step)}).values)
        pix = pix.reshape(n_bands, -1).T.astype(np.float64)
        pix = pix[np.isfinite(pix).all(1)]
        if len(pix) <= n_components:
            raise DataError(f"PCA needs more than {n_components} valid pixels, found {len(pix)}")
        mean = pix.mean(0)
        _, s, vt = np.linalg.svd(pix - mean, full_matrices=False)
        comps = vt[:n_components]
        comps *= np.sign(comps[np.arange(n_components), np.abs(comps).argmax(1)])[:, None]
        ratio = (s**2 / np.sum(s**2))[:n_components]
        w = xr.DataArray(comps.astype(np.float32), dims=("component", band_dim))
        centred = x - xr.DataArray(mean.astype(np.float32), dims=(band_dim,))
        out = xr.dot(_drop_band_coords(centred, band_dim), w, dim=band_dim)
        out = out.transpose("component", ydim, xdim).astype(np.float32)
        out = out.assign_coords(component=np.arange(1, n_components + 1)).rename("pca")
        out.attrs = {"explained_variance_ratio": ratio.tolist(), "mean": mean.tolist(),
                     "components": comps.tolist()}
        return _finish(out, geo)
