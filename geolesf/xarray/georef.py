"""Georeferencing of DataArrays: spatial dims, ``(band, y, x)`` layout, CRS/transform/nodata in and out."""

from __future__ import annotations

from typing import Any

import xarray as xr

from geolesf.errors import DataError


def _spatial_dims(da: xr.DataArray) -> tuple[str, str]:
    try:
        import rioxarray  # noqa: F401  (registers .rio)

        return da.rio.y_dim, da.rio.x_dim
    except Exception:  # noqa: BLE001 - rioxarray raises its own DimensionError family
        if "y" in da.dims and "x" in da.dims:
            return "y", "x"
        raise DataError(f"cannot find the spatial dimensions of {tuple(da.dims)}; expected 'y' and 'x'") from None


def as_band_yx(da: xr.DataArray) -> tuple[xr.DataArray, str]:
    """``da`` transposed to ``(band, y, x)`` (a 2-D array gets a length-1 band axis) and its band dim."""
    ydim, xdim = _spatial_dims(da)
    others = [d for d in da.dims if d not in (ydim, xdim)]
    if len(others) > 1:
        raise DataError(f"expected (band, y, x) or (y, x), found dims {tuple(da.dims)}")
    if not others:
        return da.expand_dims("band").transpose("band", ydim, xdim), "band"
    return da.transpose(others[0], ydim, xdim), others[0]


def georef(da: xr.DataArray) -> tuple[Any, Any, Any]:
    """``(crs, transform, nodata)`` of ``da`` from rioxarray, ``(None, None, attrs nodata)`` without it."""
    crs = transform = None
    nodata = da.attrs.get("_FillValue", da.attrs.get("nodata"))
    try:
        import rioxarray  # noqa: F401

        crs = da.rio.crs
        transform = da.rio.transform()
        nodata = da.rio.nodata if da.rio.nodata is not None else nodata
    except Exception:  # noqa: BLE001 - arrays without spatial coords
        pass
    return crs, transform, nodata


def _write_georef(out: xr.DataArray, crs: Any, transform: Any, nodata: Any) -> xr.DataArray:
    import rioxarray  # noqa: F401

    if crs is not None:
        out = out.rio.write_crs(crs)
    if transform is not None:
        out = out.rio.write_transform(transform)
    return out.rio.write_nodata(nodata, encoded=False)
