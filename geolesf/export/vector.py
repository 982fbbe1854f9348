"""Polygonise a geolesf class map into a styled GeoPackage in the scene's own CRS.

One polygon per connected region of a class (``rasterio.features.shapes``, 4- or 8-connected),
nodata excluded, with fields ``class_id``, ``class_name`` and ``area_m2`` (square metres: CRS
units when projected in metres, an equal-area projection otherwise; ``area_px`` when the raster
has no CRS). A raster with neither CRS nor geotransform is polygonised at x = column, y = -row,
where QGIS draws it (GDAL's identity transform would put it at y = +row, mirrored below the map);
geolesf's own CRS-less maps carry that grid as their geotransform, so both layers share one extent. The layer is written by GDAL through pyogrio, in the raster's CRS (never
reprojected), to a temporary file renamed at the end; its QGIS style goes into ``layer_styles``.

The class map is read whole (one byte per pixel for uint8 maps), fine up to a few hundred
megapixels.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.errors import DataError
from geolesf.io.atomic import atomic_path, check_outputs, output_lock


@dataclass
class ClassMapInfo:
    class_ids: list[int]
    class_names: list[str]
    colors: list[tuple[int, int, int]]
    nodata: int | None
    crs: Any
    transform: Any


def read_class_info(path: str | Path) -> ClassMapInfo:
    """Class ids, names and colours of a class-map GeoTIFF (``CLASS_NAMES`` + colour table)."""
    import rasterio
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import NotGeoreferencedWarning

    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a file (class-map GeoTIFF)")
    if not path.is_file():
        raise DataError(f"{path}: class map not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                tags = src.tags()
                nodata = None if src.nodata is None else int(src.nodata)
                try:
                    cmap = src.colormap(1)
                except ValueError:
                    cmap = {}
                crs, transform = src.crs, src.transform
                if src.count != 1 or np.dtype(src.dtypes[0]).kind not in "iu":
                    raise DataError(f"{path}: expected a single-band integer class map, found "
                                    f"{src.count} band(s) of {src.dtypes[0]}")
    except (rasterio.errors.RasterioError, CPLE_BaseError) as exc:
        raise DataError(f"{path}: cannot be opened as a raster ({' '.join(str(exc).split())})") from None
    raw = tags.get("CLASS_NAMES")
    names = {int(k): v for k, v in json.loads(raw).items()} if raw else {}
    if not names:
        raise DataError(f"{path}: no CLASS_NAMES metadata; is this a geolesf class map?")
    ids = sorted(names)
    from geolesf.colors import default_palette

    palette = default_palette(len(ids))
    colors = [tuple(cmap[i][:3]) if i in cmap else palette[k] for k, i in enumerate(ids)]
    # Without CRS and geotransform, place polygons where QGIS draws the raster (y = -row), not at
    # GDAL's identity (y = +row); geolesf writes such maps with that grid explicitly.
    from geolesf.io.cog import pixel_transform

    transform = pixel_transform(crs, transform)
    return ClassMapInfo(ids, [names[i] for i in ids], colors, nodata, crs, transform)  # type: ignore[arg-type]


@dataclass
class ExportResult:
    gpkg: Path
    layer: str
    features: int
    qml: Path | None
    raster_qml: Path | None


def polygonize(
    classmap: str | Path,
    gpkg: str | Path,
    *,
    layer: str | None = None,
    connectivity: int = 4,
    qml: bool = True,
    overwrite: bool = True,
) -> ExportResult:
    """Write the class map's polygons to ``gpkg`` (styled) and ``.qml`` sidecars beside both files.

    The class map is never written over; with ``overwrite=False`` (the CLI without --overwrite) an
    existing GeoPackage or ``.qml`` is refused (a raster style with the same bytes is rewritten).
    """
    from geolesf.io.qml import raster_qml

    classmap, gpkg = Path(classmap), Path(gpkg)
    if gpkg.suffix.lower() != ".gpkg":
        raise DataError(f"--gpkg {gpkg}: expected a .gpkg path")
    if not gpkg.parent.is_dir():
        raise DataError(f"--gpkg {gpkg}: folder {gpkg.parent} does not exist")
    if connectivity not in (4, 8):
        raise DataError(f"connectivity must be 4 or 8, found {connectivity}")
    info = read_class_info(classmap)
    layer = layer or gpkg.stem
    # the class map's style lists the classes, not the nodata value (as io.writers.write_class_map writes it)
    styled = [k for k, cid in enumerate(info.class_ids) if cid != info.nodata]
    rq_text = raster_qml(*([seq[k] for k in styled] for seq in (info.class_ids, info.class_names, info.colors)))
    vq_path = gpkg.with_suffix(".qml")
    if vq_path.resolve() == classmap.with_suffix(".qml").resolve():
        vq_path = gpkg.with_name(f"{gpkg.stem}.vector.qml")
    written: dict[str, Any] = {"--gpkg": gpkg}
    if qml:
        written["style of --gpkg"] = vq_path
        # The class map's own style is replaced without --overwrite only by the same bytes.
        rq_path = classmap.with_suffix(".qml")
        if not (rq_path.is_file() and rq_path.read_text(encoding="utf-8", errors="replace") == rq_text):
            written["style of the class map"] = rq_path
    with output_lock(gpkg):
        check_outputs({"class map": classmap}, written, overwrite=overwrite)
        return _polygonize(classmap, gpkg, info, layer, connectivity, qml, rq_text, vq_path)


def _polygonize(classmap: Path, gpkg: Path, info: ClassMapInfo, layer: str, connectivity: int, qml: bool,
                rq_text: str, vq_path: Path) -> ExportResult:
    import geopandas as gpd
    import rasterio
    import shapely.geometry
    from rasterio.features import shapes

    from geolesf.export.qgis import write_layer_style
    from geolesf.io.qml import vector_qml, write_qml

    from rasterio._err import CPLE_BaseError

    try:
        with rasterio.open(classmap) as src:
            arr = src.read(1)
    except (rasterio.errors.RasterioError, CPLE_BaseError) as exc:
        raise DataError(f"{classmap}: cannot read the class map, truncated or corrupt? "
                        f"({' '.join(str(exc).split())})") from None
    mask = arr != info.nodata if info.nodata is not None else None
    if arr.dtype.kind == "u" and arr.dtype.itemsize > 2:
        arr = arr.astype(np.int32)
    names = dict(zip(info.class_ids, info.class_names))
    geoms, ids = [], []
    for geom, value in shapes(arr, mask=mask, connectivity=connectivity, transform=info.transform):
        geoms.append(shapely.geometry.shape(geom))
        ids.append(int(value))
    gdf = gpd.GeoDataFrame(
        {"class_id": np.asarray(ids, dtype=np.int32), "class_name": [names.get(i, str(i)) for i in ids]},
        geometry=geoms, crs=info.crs,
    )
    if info.crs is None:
        warnings.warn(f"{classmap} has no CRS: polygons are in pixel coordinates", UserWarning, stacklevel=2)
        gdf["area_px"] = gdf.geometry.area
    elif info.crs.is_projected and (info.crs.linear_units or "").lower() in ("metre", "meter", "m"):
        gdf["area_m2"] = gdf.geometry.area
    else:
        gdf["area_m2"] = gdf.geometry.to_crs("EPSG:6933").area
    with atomic_path(gpkg, suffix=".gpkg", create=False) as tmp:
        gdf.to_file(tmp, layer=layer, driver="GPKG", engine="pyogrio")
        vqml = vector_qml(info.class_ids, info.class_names, info.colors)
        write_layer_style(tmp, layer, vqml)
    vq = rq = None
    if qml:
        rq = write_qml(classmap.with_suffix(".qml"), rq_text)
        vq = write_qml(vq_path, vqml)
    return ExportResult(gpkg=gpkg, layer=layer, features=len(gdf), qml=vq, raster_qml=rq)
