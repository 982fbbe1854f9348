"""Weak labels derived from full masks by a documented, seeded procedure: points and scribbles.

Used to measure what cheaper labels cost (``benchmarks/bench_weak_labels.py``) and to build tutorial
inputs; every function takes a ``seed`` and returns the same labels for the same seed.

**Points** (:func:`points_from_mask`): for each class present in the mask, pixels drawn uniformly
without replacement from the class's pixels — ``per_class`` of them, or ``density`` × the class's
pixel count (at least one) — optionally only from pixels at least ``margin`` px inside the class
region (an annotator clicks inside an object, not on its edge; classes with no such pixel fall back
to all their pixels).

**Scribbles** (:func:`scribbles_from_mask`): a scribble is a polyline through pixel centres that stays
inside one connected component of one class. For every 8-connected component with at least
``min_area`` px, the component is eroded by ``erode`` px (so the stroke keeps that distance from the
class boundary; a component the erosion removes keeps its own pixels); then ``1 + area //
area_per_scribble`` strokes (at most ``max_per_component``) are drawn: each starts at a seeded random
pixel of the eroded component and follows the shortest 8-connected path inside it to the pixel
farthest from the start along the component (breadth-first search), cut to its first ``max_length``
pixels. Strokes are therefore long, follow the component's extent and never cross a class border.

Both write as GeoPackages (:func:`points_to_vector`, :func:`scribbles_to_vector`): one feature per
point / stroke with the class in a ``class`` field (ids, or names through ``class_names``), in the
raster's CRS, so the training CLI reads them through the same vector label reader as any user layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.errors import ConfigError, DataError

UNLABELLED = 255

Polyline = tuple[int, np.ndarray]
"""A scribble: its class id and its ``(n, 2)`` pixel ``(row, col)`` path."""


def _classes(mask: np.ndarray, ignore: int | None, classes: Sequence[int] | None) -> list[int]:
    present = [int(c) for c in np.unique(mask) if ignore is None or c != ignore]
    return present if classes is None else [int(c) for c in classes if int(c) in present]


def points_from_mask(mask: np.ndarray, *, per_class: int | None = None, density: float | None = None,
                     seed: int = 0, margin: int = 0, ignore: int | None = UNLABELLED,
                     classes: Sequence[int] | None = None) -> np.ndarray:
    """Sparse ``(H, W)`` uint8 point labels (255 = unlabelled) drawn from ``mask`` (module docstring)."""
    from scipy import ndimage

    if (per_class is None) == (density is None):
        raise ConfigError("points_from_mask: give exactly one of per_class and density")
    if per_class is not None and per_class < 1:
        raise ConfigError(f"points_from_mask: per_class must be at least 1, found {per_class}")
    if density is not None and not 0 < density <= 1:
        raise ConfigError(f"points_from_mask: density must be in (0, 1], found {density}")
    m = np.asarray(mask)
    rng = np.random.default_rng(seed)
    out = np.full(m.shape, UNLABELLED, dtype=np.uint8)
    for c in _classes(m, ignore, classes):
        region = m == c
        inner = ndimage.binary_erosion(region, iterations=margin, border_value=1) if margin > 0 else region
        pool = np.flatnonzero(inner if inner.any() else region)
        n = per_class if per_class is not None else max(1, int(round(density * int(region.sum()))))
        pick = rng.choice(pool, size=min(n, pool.size), replace=False)
        out.flat[pick] = c
    return out


def _farthest_path(region: np.ndarray, start: int) -> np.ndarray:
    """Flat indices of a shortest 8-connected path in ``region`` from ``start`` to the farthest pixel.

    ``region`` must have a 1-px False border (the neighbour shifts wrap around)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import breadth_first_order

    idx = np.full(region.shape, -1, dtype=np.int64)
    flat = np.flatnonzero(region)
    idx.flat[flat] = np.arange(flat.size)
    rows, cols = [], []
    for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):
        b = np.roll(idx, (-dy, -dx), axis=(0, 1))  # b[y, x] = idx[y + dy, x + dx]; the border is padding
        ok = (idx >= 0) & (b >= 0)
        rows.append(idx[ok])
        cols.append(b[ok])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(r.size), (r, c)), shape=(flat.size, flat.size)).tocsr()
    order, pred = breadth_first_order(graph, int(idx.flat[start]), directed=False, return_predecessors=True)
    node, path = int(order[-1]), []
    while node >= 0:
        path.append(node)
        node = int(pred[node])
    return flat[np.asarray(path[::-1])]


def scribbles_from_mask(mask: np.ndarray, *, seed: int = 0, erode: int = 2, max_length: int = 200,
                        area_per_scribble: int = 20000, max_per_component: int = 4, min_area: int = 20,
                        ignore: int | None = UNLABELLED, classes: Sequence[int] | None = None) -> list[Polyline]:
    """Scribbles (class id, ``(n, 2)`` pixel path) drawn inside the class components of ``mask``."""
    from scipy import ndimage

    if max_length < 2 or area_per_scribble < 1 or max_per_component < 1 or erode < 0:
        raise ConfigError("scribbles_from_mask: max_length ≥ 2, area_per_scribble ≥ 1, max_per_component ≥ 1 "
                          "and erode ≥ 0 are required")
    m = np.asarray(mask)
    rng = np.random.default_rng(seed)
    out: list[Polyline] = []
    for c in _classes(m, ignore, classes):
        comps, n = ndimage.label(m == c, structure=np.ones((3, 3), bool))
        for k, box in enumerate(ndimage.find_objects(comps), start=1):
            comp = np.pad(comps[box] == k, 1)
            area = int(comp.sum())
            if area < min_area:
                continue
            core = ndimage.binary_erosion(comp, iterations=erode) if erode else comp
            core = core if core.any() else comp
            cells = np.flatnonzero(core)
            for _ in range(min(max_per_component, 1 + area // area_per_scribble)):
                path = _farthest_path(core, int(rng.choice(cells)))[:max_length]
                if path.size < 2:
                    continue
                yy, xx = np.unravel_index(path, core.shape)
                out.append((c, np.stack([yy - 1 + box[0].start, xx - 1 + box[1].start], 1)))
    return out


def burn_scribbles(lines: Sequence[Polyline], shape: tuple[int, int]) -> np.ndarray:
    """The scribbles' pixels as a sparse ``(H, W)`` uint8 raster (255 = unlabelled)."""
    out = np.full(shape, UNLABELLED, dtype=np.uint8)
    for c, path in lines:
        out[path[:, 0], path[:, 1]] = c
    return out


def _names(values: Sequence[int], class_names: Mapping[int, str] | None) -> list[Any]:
    return [class_names.get(int(v), str(v)) for v in values] if class_names else [int(v) for v in values]


def _centres(t: Any, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map coordinates of the centres of pixels ``(rows, cols)`` under the affine transform ``t``."""
    c, r = np.asarray(cols, dtype=np.float64) + 0.5, np.asarray(rows, dtype=np.float64) + 0.5
    return t.a * c + t.b * r + t.c, t.d * c + t.e * r + t.f


def write_gpkg(gdf: Any, path: str | Path, **to_file: Any) -> Path:
    """Derived weak labels (a GeoDataFrame) as the GeoPackage layer ``path.stem``, written atomically."""
    from geolesf.io.atomic import atomic_path

    path = Path(path)
    if path.suffix.lower() != ".gpkg":
        raise DataError(f"{path}: weak labels are written as a GeoPackage (.gpkg)")
    with atomic_path(path, suffix=".part.gpkg") as tmp:
        gdf.to_file(tmp, driver="GPKG", layer=path.stem, **to_file)
    return path


def points_to_vector(sparse: np.ndarray, path: str | Path, *, transform: Any, crs: Any,
                     class_names: Mapping[int, str] | None = None, field: str = "class") -> Path:
    """Write the labelled pixels of ``sparse`` as points at pixel centres (GeoPackage, class in ``field``)."""
    import geopandas as gpd
    from shapely.geometry import Point

    rows, cols = np.nonzero(sparse != UNLABELLED)
    xs, ys = _centres(transform, rows, cols)
    values = sparse[rows, cols]
    gdf = gpd.GeoDataFrame({field: _names(values, class_names)},
                           geometry=[Point(x, y) for x, y in zip(np.atleast_1d(xs), np.atleast_1d(ys))], crs=crs)
    return write_gpkg(gdf, path)


def scribbles_to_vector(lines: Sequence[Polyline], path: str | Path, *, transform: Any, crs: Any,
                        class_names: Mapping[int, str] | None = None, field: str = "class") -> Path:
    """Write scribbles as lines through pixel centres (GeoPackage, class in ``field``)."""
    import geopandas as gpd
    from shapely.geometry import LineString

    geoms = []
    for _, p in lines:
        xs, ys = _centres(transform, p[:, 0], p[:, 1])
        geoms.append(LineString(list(zip(xs, ys))))
    gdf = gpd.GeoDataFrame({field: _names([c for c, _ in lines], class_names)}, geometry=geoms, crs=crs)
    return write_gpkg(gdf, path)
