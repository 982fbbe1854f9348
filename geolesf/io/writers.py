"""Class-map writers: a tiled GeoTIFF with colour table and class names, and a PNG preview.

Both write to a temporary file beside the destination and rename it when complete, so a
crash never leaves a half-written output at the destination.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.colors import RGB, default_palette
from geolesf.errors import DataError
from geolesf.io.atomic import atomic_path
from geolesf.io.cog import write_cog


def _as_mapping(values: Mapping[int, Any] | Sequence[Any] | None) -> dict[int, Any]:
    """A ``{pixel value: item}`` dict from a mapping or a sequence indexed by pixel value."""
    if values is None:
        return {}
    if isinstance(values, Mapping):
        return {int(k): v for k, v in values.items()}
    return dict(enumerate(values))


def _legend(
    arr: np.ndarray, class_names: Mapping[int, str] | Sequence[str], colors: Mapping[int, RGB] | Sequence[RGB] | None
) -> tuple[dict[int, str], dict[int, Any], list[int]]:
    """Names and colours by pixel value, and every value to show (named or present in the map)."""
    names = {k: str(v) for k, v in _as_mapping(class_names).items()}
    cols = _as_mapping(colors)
    values = sorted(set(names) | {int(v) for v in np.unique(arr)})
    if not cols:
        palette = default_palette(len(values))
        cols = {v: palette[i] for i, v in enumerate(values)}
    return names, cols, values



def write_class_map(
    path: str | Path,
    class_map: np.ndarray,
    class_names: Mapping[int, str] | Sequence[str],
    colors: Mapping[int, RGB] | Sequence[RGB] | None = None,
    crs: Any = None,
    transform: Any = None,
    nodata: int | None = 0,
    tags: Mapping[str, Any] | None = None,
    qml: bool = True,
) -> Path:
    """Write a ``(H, W)`` uint8 class map as a Cloud-Optimized GeoTIFF (:func:`geolesf.io.cog.write_cog`).

    With ``qml`` a QGIS style (paletted renderer with the class names as legend) is written
    beside it as ``<name>.qml``, so QGIS opens the map styled.

    ``class_names`` / ``colors`` map pixel values to names / RGB (a sequence is indexed by
    value). The colour table is embedded, the names are stored in the ``CLASS_NAMES`` GDAL
    metadata item (JSON ``{value: name}``) and summarised in the band description. Without a
    CRS the file is written in pixel coordinates (x = column, y = -row; see
    :func:`geolesf.io.cog.pixel_transform`) and a warning says so.
    """

    arr = np.asarray(class_map)
    if arr.ndim != 2:
        raise DataError(f"{path}: class map must be 2-D, found shape {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise DataError(f"{path}: class values {arr.min()}..{arr.max()} do not fit in uint8")
    arr = arr.astype(np.uint8)
    names, cols, values = _legend(arr, class_names, colors)
    if nodata is not None and int(nodata) not in cols:
        cols[int(nodata)] = (0, 0, 0)
    if crs is None:
        warnings.warn(
            f"{path}: no CRS given; the class map is written in pixel coordinates (not georeferenced)",
            UserWarning,
            stacklevel=2,
        )
    all_tags = {"CLASS_NAMES": json.dumps({str(k): v for k, v in sorted(names.items())})}
    for key, value in (tags or {}).items():
        all_tags[str(key)] = value if isinstance(value, str) else json.dumps(value)
    description = "; ".join(f"{k}={v}" for k, v in sorted(names.items()))
    write_cog(path, arr, crs=crs, transform=transform, nodata=None if nodata is None else int(nodata),
              colormap={k: (*tuple(int(c) for c in v[:3]), 255) for k, v in cols.items()},
              descriptions=[description], tags=all_tags, resampling="nearest")
    if qml:
        from geolesf.io.qml import raster_qml, write_qml

        styled = [v for v in sorted(names) if v != nodata]
        write_qml(Path(path).with_suffix(".qml"),
                  raster_qml(styled, [names[v] for v in styled], [cols.get(v, (0, 0, 0)) for v in styled]))
    return Path(path)


def read_class_names(path: str | Path) -> dict[int, str]:
    """The ``{value: name}`` table stored by :func:`write_class_map`."""
    import rasterio

    with rasterio.open(path) as src:
        raw = src.tags().get("CLASS_NAMES")
    return {int(k): v for k, v in json.loads(raw).items()} if raw else {}


def write_preview_png(
    path: str | Path,
    class_map: np.ndarray,
    class_names: Mapping[int, str] | Sequence[str],
    colors: Mapping[int, RGB] | Sequence[RGB] | None = None,
    title: str = "",
    dpi: int = 120,
) -> Path:
    """Render the class map with a legend (one entry per class value present or named)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    arr = np.asarray(class_map)
    names, cols, values = _legend(arr, class_names, colors)
    rgb = np.zeros((*arr.shape, 3), dtype=np.uint8)
    for v in values:
        rgb[arr == v] = cols.get(v, (0, 0, 0))[:3]
    h, w = arr.shape
    side = max(h, w)
    fig, ax = plt.subplots(figsize=(6 * w / side + 3.2, 6 * h / side + 0.6))
    try:
        ax.imshow(rgb, interpolation="nearest")
        ax.set_axis_off()
        if title:
            ax.set_title(title, fontsize=10)
        handles = [
            Patch(facecolor=np.array(cols.get(v, (0, 0, 0))[:3]) / 255, edgecolor="k",
                  label=f"{v}: {names.get(v, str(v))}")
            for v in values
        ]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=7,
                  frameon=False)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return Path(path)


def write_cube_geotiff(path: str | Path, cube: Any, crs: Any = None, transform: Any = None) -> Path:
    """Write an :class:`~geolesf.io.hsi.HSICube` (bands last) as a multi-band Cloud-Optimized GeoTIFF.

    ``crs`` / ``transform`` override the cube's own; band names become band descriptions and
    wavelengths the per-band ``wavelength`` tag.
    """
    data = np.asarray(cube.data)
    b = data.shape[2]
    band_tags = [{"wavelength": str(cube.wavelengths[i])} for i in range(b)] if cube.wavelengths is not None else []
    return write_cog(path, data.transpose(2, 0, 1), crs=crs if crs is not None else cube.crs,
                     transform=transform if transform is not None else cube.transform, nodata=cube.nodata,
                     descriptions=[str(n) for n in list(cube.band_names)[:b]], band_tags=band_tags,
                     resampling="average")
