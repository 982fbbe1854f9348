"""Vector labels burnt onto a raster grid: the one label burner the HSI and segmentation tasks share.

:func:`burn_vector_labels` reads a GeoPackage, GeoJSON, Shapefile (anything pyogrio opens), reprojects
its features to the grid's CRS and burns them in memory onto ``(crs, transform, shape)``:

- polygons and multipolygons burn the pixels whose centre lies inside (every pixel they touch with
  ``all_touched``); points burn the pixel that holds them; lines the pixels they cross;
- the class comes from ``field``: integer ids as they are, or class *names* — mapped through
  ``name_to_id`` when given (the config's ``data.class_names``, or the training labels' names for test
  labels), else numbered 1..N in sorted order; without ``field`` every feature is class 1;
- **overlap rule**: a pixel claimed by two different classes is burnt as :data:`CONFLICT` (neither
  class) — excluded from training and testing — and counted; overlaps of one class are harmless;
- features with an empty geometry or no class value are dropped, invalid polygons are repaired
  (``make_valid``), features outside the scene are dropped; each is counted in the report, as are
  the classes left with no pixel after burning.

:func:`rasterize_labels` writes the result as a uint8 GeoTIFF on an image's grid (the segmentation
task): unburnt pixels get ``background``, overlap pixels 255 (the file's nodata, ignored in training).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.errors import ConfigError, DataError

VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".kml")

UNBURNT = -1
"""Value of a pixel no feature covers."""
CONFLICT = -2
"""Value of a pixel claimed by two different classes (the overlap rule: neither class)."""
OVERLAP_RULE = "pixels claimed by two different classes are left unlabelled (excluded from training and testing)"


def is_vector(spec: str | Path | None) -> bool:
    """True when ``spec`` names a vector label file (by suffix, :data:`VECTOR_SUFFIXES`)."""
    return spec is not None and Path(str(spec)).suffix.lower() in VECTOR_SUFFIXES


@dataclass
class BurnedLabels:
    """Labels burnt onto a grid, the class names a names field gave and what happened on the way."""

    data: np.ndarray
    """``(H, W)`` int32 class ids; :data:`UNBURNT` and :data:`CONFLICT` where no single class."""
    names: dict[int, str] = field(default_factory=dict)
    """Class id → name when the field held names (empty for an integer field)."""
    report: dict[str, Any] = field(default_factory=dict)

    def notes(self) -> list[str]:
        """One line per thing a user should know (dropped features, overlaps, empty classes)."""
        r, where = self.report, Path(self.report.get("path", "labels")).name
        lines = []
        if r.get("reprojected_from"):
            lines.append(f"{where}: {r['features']} features reprojected from {r['reprojected_from']} "
                         f"to {r['reprojected_to']}")
        texts = {"empty_geometries": "features with an empty geometry dropped",
                 "features_without_class": f"features without a value in '{r.get('field')}' dropped",
                 "invalid_geometries_repaired": "invalid geometries repaired (make_valid)",
                 "outside_scene": "features outside the scene dropped",
                 "overlap_pixels": "pixels claimed by two different classes left unlabelled (overlap rule)"}
        lines += [f"{where}: {r[k]} {text}" for k, text in texts.items() if r.get(k)]
        if r.get("classes_without_pixels"):
            lines.append(f"{where}: classes {r['classes_without_pixels']} burn no pixel")
        if r.get("new_names"):
            lines.append(f"{where}: class names {r['new_names']} are not among the known classes")
        return lines


def _read(path: Path) -> Any:
    import geopandas as gpd

    if not path.is_file():
        raise DataError(f"{path}: vector label file not found")
    try:
        return gpd.read_file(path)
    except Exception as exc:  # noqa: BLE001 — pyogrio/GDAL raise many types for unreadable files
        raise DataError(f"{path}: not a readable vector file ({exc.__class__.__name__})") from None


def _is_integer_column(values: Any) -> bool:
    """True when every value is an integer (int dtype, integer-valued float or digit string)."""
    for v in values:
        if isinstance(v, (bool, np.bool_)):
            return False
        if isinstance(v, (int, np.integer)):
            continue
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            continue
        if isinstance(v, str) and v.strip().lstrip("-").isdigit():
            continue
        return False
    return True


def _class_values(gdf: Any, path: Path, field_name: str | None,
                  name_to_id: Mapping[str, int] | None) -> tuple[list[int], dict[int, str], str, list[str]]:
    """Class id per feature, names of the ids, the field's kind (ids/names/constant) and unknown names."""
    if field_name is None:
        return [1] * len(gdf), {}, "constant", []
    if field_name not in gdf.columns:
        cols = ", ".join(str(c) for c in gdf.columns if c != gdf.geometry.name) or "none"
        raise ConfigError(f"data.label_field: {path} has no column '{field_name}' (columns: {cols})")
    values = list(gdf[field_name])
    if _is_integer_column(values):
        ids = [int(float(v)) for v in values]
        if ids and (min(ids) < 0 or max(ids) > 254):
            raise DataError(f"{path}: class ids in '{field_name}' must be within 0..254, "
                            f"found {min(ids)}..{max(ids)}")
        return ids, {}, "ids", []
    names = [str(v).strip() for v in values]
    known = {str(k).strip(): int(v) for k, v in (name_to_id or {}).items()}
    new = sorted(set(names) - set(known))
    start = max(known.values(), default=0) + 1
    if start + len(new) - 1 > 254:
        raise DataError(f"{path}: {len(set(names))} class names in '{field_name}' do not fit ids 1..254")
    mapping = {**known, **{n: start + i for i, n in enumerate(new)}}
    ids = [mapping[n] for n in names]
    return ids, {mapping[n]: n for n in set(names)}, "names", new if known else []


def _clean(gdf: Any, path: Path, field_name: str | None, crs: Any, report: dict[str, Any]) -> Any:
    """Drop empty geometries and features without a class, repair invalid ones, reproject to ``crs``."""
    if gdf.crs is None:
        raise DataError(f"{path}: the vector file has no CRS; it cannot be placed on the scene")
    geom = gdf.geometry
    empty = geom.isna() | geom.is_empty
    report["empty_geometries"] = int(empty.sum())
    keep = ~empty
    if field_name is not None and field_name in gdf.columns:
        no_class = gdf[field_name].isna() & keep
        report["features_without_class"] = int(no_class.sum())
        keep &= ~no_class
    gdf = gdf[keep]
    invalid = ~gdf.geometry.is_valid
    report["invalid_geometries_repaired"] = int(invalid.sum())
    if invalid.any():
        gdf = gdf.copy()
        gdf.loc[invalid, gdf.geometry.name] = gdf.geometry[invalid].make_valid()
    from rasterio.crs import CRS

    if CRS.from_user_input(gdf.crs) != CRS.from_user_input(crs):
        report["reprojected_from"] = str(gdf.crs.to_string())
        report["reprojected_to"] = str(CRS.from_user_input(crs).to_string())
        gdf = gdf.to_crs(crs)
    return gdf


def burn_vector_labels(vector: str | Path, *, crs: Any, transform: Any, shape: tuple[int, int],
                       field: str | None = None, all_touched: bool = False,
                       name_to_id: Mapping[str, int] | None = None, where: str = "the scene") -> BurnedLabels:
    """Burn the features of ``vector`` onto the grid ``(crs, transform, shape)`` (module docstring)."""
    from rasterio.features import rasterize
    from rasterio.transform import array_bounds
    from shapely.geometry import box

    path = Path(vector)
    if crs is None or transform is None:
        raise DataError(f"{where} has no CRS/georeferencing: vector labels {path.name} cannot be placed on it "
                        "(give a georeferenced cube, e.g. a GeoTIFF, or a label raster on the cube's grid)")
    gdf = _read(path)
    report: dict[str, Any] = {"path": str(path), "features": int(len(gdf)), "field": field,
                              "all_touched": bool(all_touched), "overlap_rule": OVERLAP_RULE}
    gdf = _clean(gdf, path, field, crs, report)
    ids, names, kind, new = _class_values(gdf, path, field, name_to_id)
    report["field_kind"] = kind
    west, south, east, north = array_bounds(shape[0], shape[1], transform)
    inside = np.asarray(gdf.geometry.intersects(box(west, south, east, north)), dtype=bool)
    report["outside_scene"] = int((~inside).sum())
    out = np.full(shape, UNBURNT, dtype=np.int32)
    conflict = np.zeros(shape, dtype=bool)
    geoms = list(gdf.geometry)
    ids_arr = np.asarray(ids, dtype=np.int64)
    for c in sorted(set(ids_arr[inside].tolist())):
        sel = np.flatnonzero(inside & (ids_arr == c))
        mask = rasterize(((geoms[i], 1) for i in sel), out_shape=shape, transform=transform, fill=0,
                         all_touched=all_touched, dtype="uint8").astype(bool)
        conflict |= mask & (out >= 0)
        out[mask & (out == UNBURNT)] = c
    out[conflict] = CONFLICT
    report["overlap_pixels"] = int(conflict.sum())
    present = sorted(set(ids))
    counts = {c: int(np.count_nonzero(out == c)) for c in present}
    report["pixels_per_class"] = {str(c): n for c, n in counts.items()}
    report["classes_without_pixels"] = [c for c in present if counts[c] == 0]
    report["new_names"] = new
    if names:
        report["names"] = {str(k): v for k, v in sorted(names.items())}
    return BurnedLabels(out, names, report)


def grid_of(image: str | Path) -> tuple[Any, Any, tuple[int, int]]:
    """``(crs, transform, shape)`` of a raster file."""
    import rasterio

    with rasterio.open(image) as src:
        return src.crs, src.transform, (src.height, src.width)


def burn_to_raster(vector: str | Path, image: str | Path, out: str | Path, *, field_name: str | None,
                   background: int, all_touched: bool = False,
                   name_to_id: Mapping[str, int] | None = None) -> tuple[Path, BurnedLabels]:
    """Burn ``vector`` onto the grid of ``image``; write a uint8 Cloud-Optimized GeoTIFF (255 = overlap, nodata)."""
    from geolesf.io.cog import write_cog

    if not 0 <= background <= 254:
        raise ConfigError(f"data.background must be within 0..254, found {background}")
    crs, transform, shape = grid_of(image)
    burned = burn_vector_labels(vector, crs=crs, transform=transform, shape=shape, field=field_name,
                                all_touched=all_touched, name_to_id=name_to_id, where=str(image))
    arr = np.where(burned.data == UNBURNT, background, burned.data)
    arr = np.where(burned.data == CONFLICT, 255, arr).astype(np.uint8)
    return Path(write_cog(out, arr, crs=crs, transform=transform, nodata=255, resampling="nearest")), burned


def rasterize_labels(vector: str | Path, image: str | Path, out: str | Path, *, field_name: str | None,
                     background: int, all_touched: bool = False) -> Path:
    """Burn ``vector`` onto the grid of ``image`` (reprojected to its CRS); write a uint8 Cloud-Optimized GeoTIFF."""
    return burn_to_raster(vector, image, out, field_name=field_name, background=background,
                          all_touched=all_touched)[0]
