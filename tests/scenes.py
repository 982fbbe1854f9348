"""A user's own scene from real pixels: the embedded Indian Pines cube as a georeferenced GeoTIFF and
polygons digitised from real ground truth, for the vector-label and user-path tests.

The georeference is **assumed**: the AVIRIS Indian Pines scene (Tippecanoe County, Indiana) ships without
one; we place it in UTM zone 16N (EPSG:32616) with 20 m pixels near West Lafayette. Only the relation
between the raster and the polygons matters to the tests, not the exact location.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = ROOT / "geolesf" / "embedded" / "indian_pines"
CRS = "EPSG:32616"
PIXEL = 20.0
ORIGIN = (499_000.0, 4_484_000.0)
"""Upper-left corner (easting, northing) of the assumed georeference."""


def transform(row0: int = 0, col0: int = 0):
    from rasterio.transform import from_origin

    return from_origin(ORIGIN[0] + col0 * PIXEL, ORIGIN[1] - row0 * PIXEL, PIXEL, PIXEL)


def ground_truth() -> np.ndarray:
    from geolesf.io.hsi import read_labels

    return read_labels(EMBEDDED / "Indian_pines_gt.mat").data


def dase_mask() -> np.ndarray:
    """The DASE training mask in standard Indian Pines class ids (0 = not a training pixel)."""
    from geolesf.data.splits import DASE_INDIAN_PINES_REMAP, apply_remap
    from geolesf.io.hsi import read_labels

    return apply_remap(read_labels(EMBEDDED / "indianpines_ts.tif").data, DASE_INDIAN_PINES_REMAP).astype(np.int32)


def class_names() -> dict[int, str]:
    from geolesf.data.catalog import classes_for_file

    return {c.id: c.name for c in classes_for_file(EMBEDDED / "Indian_pines_gt.mat")}


def write_scene(path: Path, rows: slice = slice(None), cols: slice = slice(None), georef: bool = True) -> Path:
    """The embedded cube (or a crop) as a band-interleaved uint8 GeoTIFF in the assumed georeference."""
    import rasterio

    from geolesf.io.hsi import read_cube

    data = read_cube(EMBEDDED / "IP_200_M.mat").data[rows, cols]
    r0, c0 = rows.start or 0, cols.start or 0
    profile = {"driver": "GTiff", "height": data.shape[0], "width": data.shape[1], "count": data.shape[2],
               "dtype": data.dtype.name, "interleave": "pixel"}
    if georef:
        profile.update(crs=CRS, transform=transform(r0, c0))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.ascontiguousarray(data.transpose(2, 0, 1)))
    return path


def polygons(ids: np.ndarray, affine, crs: str = CRS, to_crs: str | None = "EPSG:4326",
             names: dict[int, str] | None = None):
    """Polygonise an id map (0 = none) into a GeoDataFrame with ``class`` (names or ids), optionally reprojected."""
    import geopandas as gpd
    from rasterio.features import shapes
    from shapely.geometry import shape

    ids = np.asarray(ids, dtype=np.int32)
    feats = [(shape(g), int(v)) for g, v in shapes(ids, mask=ids > 0, transform=affine)]
    values = [names[v] if names else v for _, v in feats]
    gdf = gpd.GeoDataFrame({"class": values}, geometry=[g for g, _ in feats], crs=crs)
    return gdf.to_crs(to_crs) if to_crs else gdf


def crop_geotiff(src_path: Path, out: Path, window) -> Path:
    """A ``rasterio.windows.Window`` of a real GeoTIFF written as a plain (untiled) GeoTIFF, georeference kept."""
    import rasterio

    with rasterio.open(src_path) as src:
        profile = {**src.profile, "height": window.height, "width": window.width,
                   "transform": src.window_transform(window)}
        for key in ("blockxsize", "blockysize", "tiled"):
            profile.pop(key, None)
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read(window=window))
    return out


def spacenet_footprint_mask(spacenet: Path, folder: Path) -> tuple[np.ndarray, object, object]:
    """The SpaceNet footprints of ``spacenet`` (the ``spacenet_solaris`` folder) burnt onto its
    ``sample_geotiff.tif`` (building 1, background 0) into ``folder``: ``(mask, crs, transform)``."""
    import rasterio

    from geolesf.io.labels import rasterize_labels

    out = rasterize_labels(spacenet / "geotiff_labels.geojson", spacenet / "sample_geotiff.tif",
                           folder / "mask.tif", field_name=None, background=0)
    with rasterio.open(out) as src:
        return src.read(1), src.crs, src.transform
