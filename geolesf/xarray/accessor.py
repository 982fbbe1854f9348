"""The ``.geolesf`` xarray accessor: prediction, QGIS export and spectral helpers that keep georeferencing.

``import geolesf`` registers it (on ``xarray.DataArray`` and ``xarray.Dataset``) as soon as xarray
is imported, without importing xarray, numpy or torch itself::

    import rioxarray, geolesf
    da = rioxarray.open_rasterio("scene.tif", chunks={"x": 2048, "y": 2048})
    classes = da.geolesf.predict(checkpoint="model.pt")          # lazy (y, x), same rio.crs / transform
    probs = da.geolesf.predict(checkpoint="model.pt", probabilities=True)   # lazy (class, y, x)
    classes.geolesf.to_qgis("landcover.tif")                      # COG + .qml + .gpkg (+ .stac.json)

Every result keeps the input's ``x``/``y`` coordinates, ``rio.crs`` and ``rio.transform()`` and carries
its own nodata (``rio.nodata``). Prediction of a dask-backed array is lazy and chunk by chunk, with the
halo each chunk needs (see :mod:`geolesf.predict.chunked`); its result equals the file-based
:func:`geolesf.predict.tiled.predict_raster` on the same scene.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from geolesf.colors import to_hex
from geolesf.errors import ConfigError, DataError
from geolesf.xarray.georef import _write_georef, as_band_yx, georef
from geolesf.xarray.spectral import SpectralMixin


def _model(model: Any, checkpoint: Any, options: dict[str, Any] | None, class_names: Any, colors: Any) -> Any:
    """A :class:`~geolesf.predict.model.PredictModel` from ``model=`` and/or ``checkpoint=``."""
    from geolesf.predict.model import as_predict_model, load_predict_model

    if checkpoint is not None:
        if model is not None and not isinstance(model, str):
            raise ConfigError("give model= as a registry name together with checkpoint=, or a model object alone")
        pm = load_predict_model(checkpoint, model, options)
    elif model is None:
        raise ConfigError("predict: give checkpoint= (a model.pt path or MODEL:TAG) or model= (a module)")
    elif isinstance(model, str):
        raise ConfigError(f"predict: model='{model}' needs checkpoint= (trained weights) as well")
    else:
        pm = model
    return as_predict_model(pm, class_names=class_names, colors=colors)


def _source_tags(obj: Any) -> dict[str, str]:
    """``source`` (the file rioxarray opened, else the array's name) and ``acquired`` (ISO 8601) of an input."""
    from geolesf.io.cog import acquired_iso

    tags = {"source": str(obj.encoding.get("source") or obj.attrs.get("source") or obj.name or "DataArray")}
    acquired = acquired_iso(obj.attrs.get("acquired") or obj.attrs.get("TIFFTAG_DATETIME"))
    if acquired:
        tags["acquired"] = acquired
    return tags


class _Accessor(SpectralMixin):
    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def _array(self) -> xr.DataArray:
        return self._obj


@xr.register_dataarray_accessor("geolesf")
class GeolesfDataArrayAccessor(_Accessor):
    """``DataArray.geolesf``: ``predict``, ``to_qgis`` and the spectral helpers."""

    def predict(
        self,
        model: Any = None,
        checkpoint: str | Path | None = None,
        *,
        probabilities: bool = False,
        tile: int = 512,
        overlap: int = 64,
        blend: str = "cosine",
        margin: int | None = None,
        blend_on: str = "probabilities",
        batch_size: int = 16,
        pixel_batch: int = 4096,
        nodata: float | None = None,
        out_nodata: int | None = None,
        device: str = "cpu",
        class_names: Sequence[str] | None = None,
        colors: Sequence[Any] | None = None,
        options: dict[str, Any] | None = None,
        progress: bool = True,
    ) -> xr.DataArray:
        """Classify every pixel; a ``(y, x)`` class-id map, or ``(class, y, x)`` probabilities.

        ``model``: a registry name checked against ``checkpoint`` (``model="s2mamba"``), or a
        :class:`~geolesf.predict.model.PredictModel` / dense ``nn.Module`` used directly.
        ``checkpoint``: ``model.pt`` or ``MODEL:TAG``. The other arguments mean what they mean for
        :func:`~geolesf.predict.tiled.predict_raster` (``tile``/``overlap``/``blend`` only matter for
        dense models; patch models read each pixel's ``P×P`` neighbourhood). A dask-backed input gives
        a lazy result with the input's spatial chunks; a numpy-backed one is computed now.

        Nodata: ``nodata`` overrides the input's (``rio.nodata`` / ``_FillValue``); pixels with a NaN or
        ±Inf in any band are nodata too (as in the file-based predictor), with a warning. Class maps use
        ``out_nodata`` (default 0, or 255 when 0 is a class id); probabilities use NaN.
        """
        from geolesf import __version__
        from geolesf.predict import chunked
        from geolesf.predict.sources import ArraySource

        arr, _ = as_band_yx(self._obj)
        pm = _model(model, checkpoint, options, class_names, colors)
        crs, transform, src_nodata = georef(arr)
        src = ArraySource(arr, nodata if nodata is not None else src_nodata, crs=crs, transform=transform)
        src.name = str(self._obj.name or "DataArray")
        plan = chunked.make_plan(src, pm, tile=tile, overlap=overlap, blend=blend, margin=margin,
                                 blend_on=blend_on, batch_size=batch_size, pixel_batch=pixel_batch,
                                 out_nodata=out_nodata, device=device, probabilities=probabilities)
        data = arr.data
        if hasattr(data, "dask"):
            data = data.rechunk({0: -1})
            values = chunked.predict_dask(plan, data)
        else:
            data = np.asarray(data)
            if data.dtype.kind in "fc":
                bad = int((~np.isfinite(data).all(axis=0)).sum())
                if bad:
                    import warnings

                    warnings.warn(f"{src.name}: {bad:,} NaN/±Inf pixels are treated as nodata (not classified)",
                                  UserWarning, stacklevel=2)
                plan.warn_nonfinite = False
            values = chunked.predict_numpy(plan, data, progress=progress)
        ydim, xdim = arr.dims[1], arr.dims[2]
        coords = {k: v for k, v in arr.coords.items() if set(v.dims) <= {ydim, xdim}}
        dense = pm.kind == "dense"
        tags = {
            "model": pm.name, "weights_sha256": pm.sha256, "tile": int(tile), "overlap": int(overlap) if dense else 0,
            "blend": blend if dense else "none", "blend_on": blend_on, "geolesf_version": __version__,
            "class_ids": [int(i) for i in pm.class_ids], "class_names": [str(n) for n in pm.class_names],
            "colors": [to_hex(c) for c in pm.colors],
        }
        if not dense:
            tags["patch_size"] = int(pm.patch_size)
        tags.update(_source_tags(self._obj))
        if probabilities:
            out = xr.DataArray(values, dims=("class", ydim, xdim), coords={**coords, "class": list(pm.class_names)},
                               name="probabilities", attrs=tags)
            return _write_georef(out, crs, transform, np.nan)
        out = xr.DataArray(values, dims=(ydim, xdim), coords=coords, name="class", attrs=tags)
        return _write_georef(out, crs, transform, plan.nodata_out)

    def to_qgis(self, path: str | Path, *, gpkg: str | Path | bool = True, stac: bool = False,
                block: int = 512, progress: bool = True) -> dict[str, Path]:
        """Write a class map as a Cloud-Optimized GeoTIFF + QGIS ``.qml`` (+ styled GeoPackage, STAC Item).

        The DataArray must be a ``(y, x)`` integer class map with ``class_ids`` / ``class_names`` /
        ``colors`` attributes, as :meth:`predict` returns. A dask-backed map is computed chunk by chunk
        while it is written, never whole. ``gpkg``: ``True`` for ``<path>.gpkg``, a path, or ``False``.
        Returns the written paths by kind (``tif``, ``qml``, ``gpkg``, ``stac``).
        """
        from geolesf.xarray.export import write_classmap

        return write_classmap(self._obj, Path(path), gpkg=gpkg, stac=stac, block=block, progress=progress)

    export = to_qgis


@xr.register_dataset_accessor("geolesf")
class GeolesfDatasetAccessor(_Accessor):
    """``Dataset.geolesf``: the data variables (each ``(y, x)``) stacked as bands, then as for a DataArray."""

    def bands(self, variables: Sequence[str] | None = None) -> xr.DataArray:
        ds = self._obj
        names = list(variables) if variables is not None else list(ds.data_vars)
        if not names:
            raise DataError("the Dataset has no data variables to use as bands")
        missing = [n for n in names if n not in ds.data_vars]
        if missing:
            raise DataError(f"variables {missing} are not in the Dataset (has {list(ds.data_vars)})")
        da = ds[names].to_array("band")
        crs, transform, nodata = georef(ds[names[0]])
        if crs is not None:
            da = _write_georef(da, crs, transform, nodata)
        return da

    def predict(self, model: Any = None, checkpoint: str | Path | None = None, *,
                variables: Sequence[str] | None = None, **kwargs: Any) -> xr.DataArray:
        """:meth:`GeolesfDataArrayAccessor.predict` on ``variables`` (default all) stacked in order."""
        return self.bands(variables).geolesf.predict(model, checkpoint, **kwargs)

    def to_qgis(self, path: str | Path, *, variable: str, **kwargs: Any) -> dict[str, Path]:
        """:meth:`GeolesfDataArrayAccessor.to_qgis` on one class-map variable."""
        if variable not in self._obj.data_vars:
            raise DataError(f"variable '{variable}' is not in the Dataset (has {list(self._obj.data_vars)})")
        return self._obj[variable].geolesf.to_qgis(path, **kwargs)

    export = to_qgis

    def _array(self) -> xr.DataArray:
        return self.bands()


