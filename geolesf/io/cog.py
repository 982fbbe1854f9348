"""Streaming GeoTIFF output of the tiled predictor, finished as a Cloud-Optimized GeoTIFF.

Rows are written into a temporary *tiled* GeoTIFF beside the destination in full-width bands
whose height is a multiple of the block size, so every block is written exactly once. At the end
GDAL's COG driver copies it (overviews, deflate, same CRS/transform, colour table, band
descriptions and metadata) to a second temporary file that is renamed onto the destination. The
destination therefore either does not exist or is complete.

Class names follow :mod:`geolesf.io.writers`: the ``CLASS_NAMES`` metadata item holds JSON
``{value: name}`` and the band description lists ``value=name`` pairs.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.colors import hex_to_rgb
from geolesf.io.atomic import atomic_path


@dataclass(frozen=True)
class PartialPaths:
    """Hidden files beside the destination: temp GeoTIFFs, resume state, COG being built."""

    dest: Path
    probs: Path | None

    @property
    def tmp(self) -> Path:
        return self.dest.with_name(f".{self.dest.name}.partial.tif")

    @property
    def tmp_probs(self) -> Path | None:
        return None if self.probs is None else self.probs.with_name(f".{self.probs.name}.partial.tif")

    @property
    def state(self) -> Path:
        return self.dest.with_name(f".{self.dest.name}.resume.npz")

    def all(self) -> list[Path]:
        paths = [self.tmp, self.state]
        if self.probs is not None:
            paths.append(self.tmp_probs)
        return paths

    def remove(self) -> None:
        for p in self.all():
            if p.exists():
                p.unlink()



def class_tags(class_ids: Sequence[int], class_names: Sequence[str]) -> tuple[dict[str, str], str]:
    """``CLASS_NAMES`` metadata (JSON) and the band description, as :mod:`geolesf.io.writers` writes them."""
    names = {int(i): str(n) for i, n in zip(class_ids, class_names)}
    meta = {"CLASS_NAMES": json.dumps({str(k): v for k, v in sorted(names.items())})}
    description = "; ".join(f"{k}={v}" for k, v in sorted(names.items()))[:1000]
    return meta, description


def open_temp(
    path: Path,
    *,
    height: int,
    width: int,
    count: int,
    dtype: str,
    nodata: float | None,
    crs: Any,
    transform: Any,
    block: int,
    compress: str | None = None,
) -> Any:
    """Create the temporary tiled GeoTIFF (``w`` mode)."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    profile: dict[str, Any] = {
        "driver": "GTiff", "height": height, "width": width, "count": count, "dtype": dtype,
        "tiled": True, "blockxsize": block, "blockysize": block, "BIGTIFF": "IF_SAFER",
        "interleave": "band",
    }
    if compress:
        profile.update(compress=compress, zlevel=1)
    if nodata is not None:
        profile["nodata"] = nodata
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path, "w", **profile)


def reopen(path: Path) -> Any:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path, "r+")


def write_class_metadata(
    ds: Any,
    class_ids: Sequence[int],
    class_names: Sequence[str],
    colors: Sequence[Any],
    nodata: int,
    tags: dict[str, str],
) -> None:
    meta, description = class_tags(class_ids, class_names)
    cmap = {int(i): (*hex_to_rgb(c), 255) for i, c in zip(class_ids, colors)}
    if nodata < 256:
        cmap.setdefault(int(nodata), (0, 0, 0, 0))
    ds.write_colormap(1, cmap)
    ds.set_band_description(1, description)
    ds.update_tags(**meta, **tags)


def write_prob_metadata(ds: Any, class_names: Sequence[str], scale: float | None, tags: dict[str, str]) -> None:
    for b, name in enumerate(class_names, start=1):
        ds.set_band_description(b, f"p({name})")
    if scale is not None:
        ds.scales = [scale] * ds.count
        ds.offsets = [0.0] * ds.count
    ds.update_tags(**tags, probability_scale=str(scale if scale is not None else 1.0))


def finalize_cog(tmp: Path, dest: Path, *, block: int, resampling: str, predictor: bool) -> None:
    """Copy ``tmp`` to a COG beside ``dest`` and rename it onto ``dest``; ``tmp`` is removed."""
    import rasterio.shutil
    from rasterio.errors import NotGeoreferencedWarning

    # Single-threaded on purpose: NUM_THREADS=ALL_CPUS halves this step's time (same bytes) but
    # raised the predictor's peak memory by ~75 MB on a 4,096² scene (per-thread buffers).
    options = {
        "COMPRESS": "DEFLATE", "BLOCKSIZE": block, "OVERVIEW_RESAMPLING": resampling.upper(),
        "BIGTIFF": "IF_SAFER",
    }
    if predictor:
        options["PREDICTOR"] = "YES"
    with atomic_path(dest, suffix=".cog.tif", create=False) as cog_tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        rasterio.shutil.copy(tmp, cog_tmp, driver="COG", **options)
    tmp.unlink()


def estimate_bytes(height: int, width: int, itemsize: int, prob_bands: int, prob_itemsize: int) -> int:
    """Worst-case disk need: temp + COG (≤ 4/3 with overviews) for each output, uncompressed."""
    px = height * width
    return int(px * itemsize * (1 + 4 / 3) + px * prob_bands * prob_itemsize * (1 + 4 / 3))


def free_bytes(folder: Path) -> int:
    import shutil

    return shutil.disk_usage(folder).free


def as_dtype_name(dtype: Any) -> str:
    return np.dtype(dtype).name
