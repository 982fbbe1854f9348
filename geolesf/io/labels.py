"""Vector labels burnt onto a raster's grid: the label reader shared by the dense trainers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geolesf.errors import ConfigError, DataError

VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".kml")


def rasterize_labels(vector: str | Path, image: str | Path, out: str | Path, *, field_name: str | None,
                     background: int) -> Path:
    """Burn ``vector`` onto the grid of ``image`` (reprojected to its CRS); write a uint8 Cloud-Optimized GeoTIFF."""
    import geopandas as gpd
    import rasterio
    from rasterio.features import rasterize

    from geolesf.io.cog import write_cog

    try:
        gdf = gpd.read_file(vector)
    except Exception as exc:  # fiona/pyogrio raise many types for unreadable files
        raise DataError(f"{vector}: not a readable vector file ({exc.__class__.__name__})") from None
    with rasterio.open(image) as src:
        crs, transform, shape = src.crs, src.transform, (src.height, src.width)
    if crs is None:
        raise DataError(f"{image}: has no CRS; vector labels cannot be placed on it")
    if gdf.crs is None:
        raise DataError(f"{vector}: has no CRS")
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty].to_crs(crs)
    if field_name is not None:
        if field_name not in gdf.columns:
            raise ConfigError(f"data.label_field: {vector} has no column '{field_name}' "
                              f"(columns: {', '.join(c for c in gdf.columns if c != 'geometry')})")
        values = gdf[field_name].astype(int).to_numpy()
    else:
        values = np.ones(len(gdf), dtype=int)
    if len(values) and (values.min() < 0 or values.max() > 254):
        raise DataError(f"{vector}: class ids must be within 0..254")
    if not 0 <= background <= 254:
        raise ConfigError(f"data.background must be within 0..254, found {background}")
    if len(values):
        burnt = rasterize(list(zip(gdf.geometry, values.tolist())), out_shape=shape, transform=transform,
                          fill=background, dtype="uint8")
    else:
        burnt = np.full(shape, background, np.uint8)
    return write_cog(out, burnt, crs=crs, transform=transform, nodata=255, resampling="nearest")
