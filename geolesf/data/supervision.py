"""Weak-supervision types and their converters (survey taxonomy, methods.md §6).

| supervision | input here | converter | used by |
|---|---|---|---|
| image-level tags | dense masks, or a CSV / GeoPackage of tile tags | :func:`tags_from_mask`, :func:`read_tile_tags` | ``cam``, ``usage``, ``single-stage`` training |
| points | vector file of points + class field | :func:`rasterize_sparse` (``kind="point"``) | :func:`partial_cross_entropy` |
| scribbles | vector file of lines + class field | :func:`rasterize_sparse` (``kind="scribble"``) | :func:`partial_cross_entropy` |
| boxes | vector file of polygons/boxes + class field | :func:`boxes_from_vector`, :func:`boxes_to_pseudo_mask` | SAM box prompts, box pseudo-masks |

Sparse label maps use 255 for unlabelled pixels. Vector inputs are reprojected to the raster's CRS
before rasterising; class values are names (mapped through ``class_ids``) or integer ids.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.errors import DataError

UNLABELLED = 255
KINDS = ("point", "scribble", "box")


def tags_from_mask(mask: np.ndarray, class_ids: Sequence[int], *, ignore_index: int | None = 255,
                   min_fraction: float = 0.0, min_pixels: int = 1) -> np.ndarray:
    """Multi-hot ``(len(class_ids),)`` float32 tags: class ``k`` is present when at least
    ``max(min_pixels, min_fraction · valid pixels)`` pixels of ``mask`` equal ``class_ids[k]``."""
    m = np.asarray(mask)
    valid = m != ignore_index if ignore_index is not None else np.ones(m.shape, dtype=bool)
    n = int(valid.sum())
    need = max(int(min_pixels), int(np.ceil(min_fraction * n)))
    counts = np.array([int(((m == c) & valid).sum()) for c in class_ids])
    return ((counts >= max(need, 1)) & (counts > 0)).astype(np.float32)


@dataclass
class TileTags:
    """Image-level tags of named tiles: ``tags[i]`` is the multi-hot vector of ``names[i]``."""

    names: list[str]
    tags: np.ndarray
    class_names: list[str]
    geometry: Any = None
    """The tiles' footprints (GeoSeries) when read from a vector file with geometries."""

    def as_dict(self) -> dict[str, np.ndarray]:
        return dict(zip(self.names, self.tags))


def _row_tags(row: Mapping[str, Any], class_names: Sequence[str], classes_field: str, where: str) -> np.ndarray:
    out = np.zeros(len(class_names), dtype=np.float32)
    index = {n.lower(): i for i, n in enumerate(class_names)}
    if classes_field in row:
        cell = row[classes_field]
        cell = "" if cell is None or (isinstance(cell, float) and np.isnan(cell)) else str(cell)
        for part in cell.replace("|", ";").replace(",", ";").split(";"):
            name = part.strip().lower()
            if not name:
                continue
            if name not in index:
                raise DataError(f"{where}: unknown class '{part.strip()}' (expected one of {', '.join(class_names)})")
            out[index[name]] = 1.0
        return out
    found = False
    for name, i in index.items():
        for key in row:
            if str(key).lower() == name:
                found = True
                value = row[key]
                text = "" if value is None else str(value).strip().lower()
                out[i] = float(text in ("1", "1.0", "true", "yes", "y"))
    if not found:
        raise DataError(f"{where}: expected a '{classes_field}' column or one 0/1 column per class "
                        f"({', '.join(class_names)})")
    return out


def read_tile_tags(path: str | Path, class_names: Sequence[str], *, tile_field: str = "tile",
                   classes_field: str = "classes") -> TileTags:
    """Read tile tags from a CSV or a vector file (GeoPackage, GeoJSON, shapefile).

    Each row names a tile (``tile_field``) and either lists its classes in ``classes_field``
    (separated by ``;``, ``|`` or ``,``) or has one 0/1 column per class name.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: tile-tag file not found")
    rows: list[dict[str, Any]]
    geometry = None
    if path.suffix.lower() in (".csv", ".txt"):
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    else:
        import geopandas as gpd

        try:
            gdf = gpd.read_file(path)
        except Exception as exc:  # noqa: BLE001 - any reader failure is a bad input file
            raise DataError(f"{path}: cannot be read as a vector file ({exc.__class__.__name__})") from None
        geometry = gdf.geometry if "geometry" in gdf else None
        rows = [dict(r) for r in gdf.drop(columns="geometry", errors="ignore").to_dict("records")]
    if not rows:
        raise DataError(f"{path}: no tile rows")
    if tile_field not in rows[0]:
        found = ", ".join(map(str, rows[0]))
        raise DataError(f"{path}: expected a '{tile_field}' column naming each tile, found {found}")
    names = [str(r[tile_field]) for r in rows]
    tags = np.stack([_row_tags(r, class_names, classes_field, f"{path} row {i + 1}") for i, r in enumerate(rows)])
    return TileTags(names, tags, list(class_names), geometry)


def _read_vector(path: str | Path, crs: Any) -> Any:
    import geopandas as gpd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: vector file not found")
    try:
        gdf = gpd.read_file(path)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: cannot be read as a vector file ({exc.__class__.__name__})") from None
    if crs is not None and gdf.crs is not None and gdf.crs != crs:
        gdf = gdf.to_crs(crs)
    return gdf


def _class_values(gdf: Any, class_field: str, class_ids: Mapping[str, int] | None, path: Any) -> list[int]:
    if class_field not in gdf.columns:
        raise DataError(f"{path}: expected a '{class_field}' column with the class of each feature, "
                        f"found {', '.join(map(str, gdf.columns))}")
    out = []
    for v in gdf[class_field]:
        if class_ids is not None and str(v) in class_ids:
            out.append(int(class_ids[str(v)]))
        elif isinstance(v, (int, np.integer)) or (isinstance(v, str) and v.isdigit()):
            out.append(int(v))
        else:
            known = ", ".join(class_ids) if class_ids else "integer ids"
            raise DataError(f"{path}: class '{v}' in column '{class_field}' is unknown (expected {known})")
    return out


def rasterize_sparse(path: str | Path, *, shape: tuple[int, int], transform: Any, crs: Any = None,
                     kind: str = "point", class_field: str = "class", class_ids: Mapping[str, int] | None = None,
                     width_px: float = 1.0) -> np.ndarray:
    """Points or scribbles of a vector file → ``(H, W)`` uint8 label map, 255 = unlabelled.

    Points are buffered to a disc of diameter ``width_px`` pixels and lines to a stroke of that
    width (1 = the touched pixels only). Later features overwrite earlier ones.
    """
    from rasterio.features import rasterize

    if kind not in ("point", "scribble"):
        raise DataError(f"kind must be 'point' or 'scribble', found '{kind}'")
    gdf = _read_vector(path, crs)
    values = _class_values(gdf, class_field, class_ids, path)
    if any(v < 0 or v >= UNLABELLED for v in values):
        raise DataError(f"{path}: class ids must be in 0..254")
    pixel = abs(transform.a)
    shapes = []
    for geom, v in zip(gdf.geometry, values):
        if geom is None or geom.is_empty:
            continue
        want = ("Point", "MultiPoint") if kind == "point" else ("LineString", "MultiLineString")
        if geom.geom_type not in want:
            raise DataError(f"{path}: {kind} labels need {' or '.join(want)} geometries, found {geom.geom_type}")
        if width_px > 1:
            geom = geom.buffer(width_px * pixel / 2)
        shapes.append((geom, v))
    if not shapes:
        return np.full(shape, UNLABELLED, dtype=np.uint8)
    return rasterize(shapes, out_shape=shape, transform=transform, fill=UNLABELLED, all_touched=True,
                     dtype="uint8")


def boxes_from_vector(path: str | Path, *, transform: Any, crs: Any = None, class_field: str = "class",
                      class_ids: Mapping[str, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Feature bounding boxes in pixel coordinates ``(N, 4)`` ``[x0, y0, x1, y1]`` and their classes ``(N,)``."""
    gdf = _read_vector(path, crs)
    values = _class_values(gdf, class_field, class_ids, path) if class_field in gdf.columns or class_ids else \
        [1] * len(gdf)
    inv = ~transform
    boxes = []
    for geom in gdf.geometry:
        minx, miny, maxx, maxy = geom.bounds
        xs, ys = zip(*(inv @ (x, y) for x, y in ((minx, miny), (maxx, maxy))))
        boxes.append([min(xs), min(ys), max(xs), max(ys)])
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(values, dtype=np.int64)


def pixel_boxes_to_polygons(boxes: np.ndarray, transform: Any) -> list[Any]:
    """Shapely polygons of pixel boxes under an affine ``transform`` (identity when None)."""
    import shapely.geometry

    polys = []
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
        if transform is not None:
            a, b, c, d, e, f = tuple(transform)[:6]
            corners = [(a * x + b * y + c, d * x + e * y + f) for x, y in corners]
        polys.append(shapely.geometry.Polygon(corners))
    return polys


def boxes_to_pseudo_mask(boxes: np.ndarray, classes: Sequence[int], shape: tuple[int, int], *,
                         fill: str = "box", background: int = 0) -> np.ndarray:
    """Box labels → a pseudo mask ``(H, W)`` uint8: ``background`` outside every box, the box's class inside.

    ``fill="box"`` fills the rectangle, ``"ellipse"`` its inscribed ellipse (a tighter object prior).
    Boxes are painted largest first, so a smaller box on top of a larger one keeps its class.
    The boxes themselves are the SAM prompts; the mask is the pseudo-label they imply.
    """
    if fill not in ("box", "ellipse"):
        raise DataError(f"fill must be 'box' or 'ellipse', found '{fill}'")
    h, w = shape
    out = np.full((h, w), background, dtype=np.uint8)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), kind="stable")
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    for k in order:
        x0, y0, x1, y1 = b[k]
        inside = (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)
        if fill == "ellipse":
            cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, max((x1 - x0) / 2, 1e-9), max((y1 - y0) / 2, 1e-9)
            inside &= ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
        out[inside] = int(classes[k])
    return out


def partial_cross_entropy(logits: Any, sparse: Any, ignore_index: int = UNLABELLED, weight: Any = None) -> Any:
    """Cross-entropy over the labelled pixels of a sparse (point / scribble) map only; 0 when none.

    ``weight``: optional ``(K,)`` class weights (the weighted mean over the labelled pixels)."""
    from torch.nn import functional as F

    target = sparse.long()
    if not (target != ignore_index).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index)
