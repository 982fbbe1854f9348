"""Detection boxes → a styled GeoPackage in the scene's CRS.

Pixel boxes ``x1, y1, x2, y2`` (pixel-edge coordinates: ``x2``/``y2`` are the right/bottom
edges) are mapped through the scene's affine transform to polygons (rotated/sheared transforms
stay exact: the four corners are transformed, not the bounds) and written by GDAL (pyogrio) with
fields ``class_id``, ``class_name`` and ``score``, in the scene CRS (never reprojected), to a
temporary file renamed at the end. The layer's QGIS style — a categorised renderer on
``class_id`` with one coloured outline (no fill) per class — goes into the GeoPackage's
``layer_styles`` table (QGIS opens it styled) and into a ``.qml`` beside the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.data.supervision import pixel_boxes_to_polygons
from geolesf.errors import DataError
from geolesf.io.atomic import atomic_path


def boxes_qml(class_ids: Sequence[int], class_names: Sequence[str], colors: Sequence[Any],
              field: str = "class_id", width_mm: float = 0.6) -> str:
    """Categorised QML: an outline-only symbol per class, labelled with the class name."""
    from geolesf.io.qml import vector_qml

    return vector_qml(class_ids, class_names, colors, field=field, outline_mm=width_mm)


@dataclass
class BoxExport:
    gpkg: Path
    layer: str
    features: int
    qml: Path | None


def write_boxes_gpkg(
    gpkg: str | Path,
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    crs: Any,
    transform: Any,
    colors: Sequence[Any] | None = None,
    layer: str | None = None,
    qml: bool = True,
) -> BoxExport:
    """Write detections (pixel boxes, 0-based class indices) as a styled GeoPackage layer."""
    import geopandas as gpd

    from geolesf.colors import default_palette
    from geolesf.export.qgis import write_layer_style
    from geolesf.io.qml import write_qml

    gpkg = Path(gpkg)
    if gpkg.suffix.lower() != ".gpkg":
        raise DataError(f"--out {gpkg}: expected a .gpkg path for detection boxes")
    if not gpkg.parent.is_dir():
        raise DataError(f"--out {gpkg}: folder {gpkg.parent} does not exist")
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(labels) != len(scores) or len(labels) != len(np.asarray(boxes).reshape(-1, 4)):
        raise DataError(f"write_boxes_gpkg: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels")
    colors = list(colors) if colors is not None else default_palette(len(class_names))
    layer = layer or gpkg.stem
    gdf = gpd.GeoDataFrame(
        {"class_id": labels.astype(np.int32), "class_name": [str(class_names[i]) for i in labels],
         "score": scores.astype(np.float64)},
        geometry=pixel_boxes_to_polygons(boxes, transform), crs=crs,
    )
    style = boxes_qml(range(len(class_names)), class_names, colors)
    with atomic_path(gpkg, suffix=".gpkg", create=False) as tmp:
        gdf.to_file(tmp, layer=layer, driver="GPKG", engine="pyogrio", geometry_type="Polygon")
        write_layer_style(tmp, layer, style, description="geolesf detection boxes")
    side = write_qml(gpkg.with_suffix(".qml"), style) if qml else None
    return BoxExport(gpkg=gpkg, layer=layer, features=len(gdf), qml=side)
