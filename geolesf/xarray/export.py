"""``DataArray.geolesf.to_qgis``: a class-map DataArray → COG + QGIS style + GeoPackage (+ STAC Item).

The COG is built like the tiled predictor's output (:mod:`geolesf.io.cog`): a temporary tiled
GeoTIFF beside the destination, written one dask chunk at a time (a lazy prediction is computed
while it is written, never whole), then copied to a Cloud-Optimized GeoTIFF (overviews, deflate,
colour table, class names, provenance tags) renamed onto the destination. The GeoPackage polygons
and their ``layer_styles`` come from :func:`geolesf.export.vector.polygonize`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.errors import DataError

PROVENANCE_ATTRS = ("model", "weights_sha256", "tile", "overlap", "blend", "blend_on", "patch_size",
                    "geolesf_version", "source", "acquired")


def _class_legend(da: Any, path: Path) -> tuple[list[int], list[str], list[Any]]:
    from geolesf.colors import default_palette

    ids = da.attrs.get("class_ids")
    if ids is None:
        raise DataError(f"{path}: the DataArray has no 'class_ids' attribute; export the result of "
                        "da.geolesf.predict(...) or set class_ids / class_names / colors attrs")
    ids = [int(i) for i in ids]
    names = [str(n) for n in da.attrs.get("class_names", [f"class {i}" for i in ids])]
    colors = list(da.attrs.get("colors", default_palette(len(ids))))
    if not len(ids) == len(names) == len(colors):
        raise DataError(f"{path}: {len(ids)} class_ids, {len(names)} class_names and {len(colors)} colors differ")
    return ids, names, colors


def _blocks(data: Any) -> Any:
    """``(row0, col0, numpy block)`` one chunk at a time (the whole array once for numpy data)."""
    if not hasattr(data, "dask"):
        yield 0, 0, np.asarray(data)
        return
    ys = np.cumsum((0, *data.chunks[0]))
    xs = np.cumsum((0, *data.chunks[1]))
    for i in range(len(ys) - 1):
        for j in range(len(xs) - 1):
            yield int(ys[i]), int(xs[j]), np.asarray(data.blocks[i, j].compute())


def write_classmap(da: Any, path: Path, *, gpkg: Path | str | bool = True, stac: bool = False, block: int = 512,
                   progress: bool = True) -> dict[str, Path]:
    """Write ``da`` (``(y, x)`` integer class ids) as ``path`` (COG) + ``.qml`` (+ ``.gpkg``, ``.stac.json``)."""
    from geolesf.io.atomic import check_tif_out, output_lock
    from geolesf.xarray.georef import _spatial_dims, georef

    path = Path(path)
    check_tif_out(path, "to_qgis")
    if da.ndim != 2:
        raise DataError(f"{path}: to_qgis writes a (y, x) class map, found dims {tuple(da.dims)}; "
                        "export probabilities with da.rio.to_raster")
    if np.dtype(da.dtype).kind not in "iu":
        raise DataError(f"{path}: a class map needs integer class ids, found {da.dtype}")
    if block < 16 or block % 16:
        raise DataError(f"{path}: block must be a positive multiple of 16, found {block}")
    ids, names, colors = _class_legend(da, path)
    ydim, xdim = _spatial_dims(da)
    da = da.transpose(ydim, xdim)
    crs, transform, nodata = georef(da)
    if crs is None:
        warnings.warn(f"{path}: the DataArray has no CRS; the map is written in pixel coordinates",
                      UserWarning, stacklevel=3)
    dtype = "uint8" if max([*ids, int(nodata) if nodata is not None else 0]) < 256 else "uint16"
    if nodata is None:
        nodata = next(v for v in (0, 255, 65535) if v not in ids)
    tags = {k: str(da.attrs[k]) for k in PROVENANCE_ATTRS if k in da.attrs and da.attrs[k] is not None}
    # the input file (predict() records it; rioxarray keeps it in encoding), else the array's name
    tags.setdefault("source", str(da.encoding.get("source") or da.name or "DataArray"))
    with output_lock(path):
        return _write_locked(da, path, gpkg=gpkg, stac=stac, block=block, progress=progress, ids=ids, names=names,
                             colors=colors, crs=crs, transform=transform, nodata=int(nodata), dtype=dtype, tags=tags)


def _write_locked(da: Any, path: Path, *, gpkg: Any, stac: bool, block: int, progress: bool, ids: Any, names: Any,
                  colors: Any, crs: Any, transform: Any, nodata: int, dtype: str, tags: dict) -> dict[str, Path]:
    """:func:`write_classmap` once ``path`` is locked against other geolesf runs."""
    import os
    import tempfile

    from rasterio.windows import Window
    from tqdm.auto import tqdm

    from geolesf.io import cog as _cog
    from geolesf.io.qml import raster_qml, write_qml

    # A temporary name unique per run (pid + random): nothing here is resumed.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".partial.tif", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    height, width = da.shape
    dst = _cog.open_temp(tmp, height=height, width=width, count=1, dtype=dtype, nodata=int(nodata),
                         crs=crs, transform=transform, block=block)
    try:
        _cog.write_class_metadata(dst, ids, names, colors, int(nodata), tags)
        data = da.data
        n_blocks = int(np.prod(data.numblocks)) if hasattr(data, "dask") else 1
        for r0, c0, arr in tqdm(_blocks(data), total=n_blocks, unit="chunk", desc=f"write {path.name}",
                                disable=not progress, dynamic_ncols=True):
            dst.write(arr.astype(dtype), 1, window=Window(c0, r0, arr.shape[1], arr.shape[0]))
        dst.close()
        _cog.finalize_cog(tmp, path, block=block, resampling="nearest", predictor=False)
    except BaseException:
        if not dst.closed:
            dst.close()
        tmp.unlink(missing_ok=True)
        raise
    written = {"tif": path, "qml": write_qml(path.with_suffix(".qml"), raster_qml(ids, names, colors))}
    if gpkg:
        from geolesf.export.vector import polygonize

        gpkg_path = path.with_suffix(".gpkg") if gpkg is True else Path(gpkg)
        written["gpkg"] = polygonize(path, gpkg_path).gpkg
    if stac:
        from geolesf.export.stac import write_stac_item

        written["stac"] = write_stac_item(path)
    return written
