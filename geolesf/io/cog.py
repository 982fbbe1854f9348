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
    transform = pixel_transform(crs, transform)
    if transform is not None:
        profile["transform"] = transform
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path, "w", **profile)


def pixel_transform(crs: Any, transform: Any) -> Any:
    """The geotransform an output is written with: ``transform``, except for a map without CRS.

    A raster without CRS and without (or with an identity) geotransform is placed differently by
    GDAL (identity: y = +row, image below the x axis mirrored) and QGIS (y = -row, upright). Such
    outputs are written with the explicit north-up pixel grid ``(1, 0, 0, 0, -1, 0)`` instead, so
    every tool places them at x = column, y = -row, where :mod:`geolesf.export.vector` puts the
    polygons. Pixels are unchanged; only the geotransform tag differs from the input.
    """
    from affine import Affine

    if crs is None and (transform is None or Affine(*tuple(transform)[:6]).is_identity):
        return Affine(1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
    return transform


def acquired_iso(value: Any) -> str | None:
    """An acquisition time as ISO 8601 UTC (``1992-06-12T00:00:00Z``), or None when absent or unreadable.

    Accepts a :class:`datetime.datetime`, an ISO string, or TIFF's ``TIFFTAG_DATETIME`` form
    ``YYYY:MM:DD HH:MM:SS`` (no time zone in TIFF: taken as UTC).
    """
    import datetime as dt

    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        t = value
    else:
        text = str(value).strip()
        try:
            t = dt.datetime.strptime(text, "%Y:%m:%d %H:%M:%S")
        except ValueError:
            try:
                t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                return None
    t = t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)
    return t.isoformat().replace("+00:00", "Z")


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


def write_cog(
    path: str | Path,
    data: np.ndarray,
    *,
    crs: Any = None,
    transform: Any = None,
    nodata: float | None = None,
    colormap: dict[int, tuple[int, ...]] | None = None,
    descriptions: Sequence[str] = (),
    tags: dict[str, str] | None = None,
    band_tags: Sequence[dict[str, str]] = (),
    scales: Sequence[float] | None = None,
    resampling: str = "nearest",
    predictor: bool = False,
) -> Path:
    """Write a ``(bands, H, W)`` (or ``(H, W)``) array at ``path`` as a Cloud-Optimized GeoTIFF.

    The one in-memory GeoTIFF writer of geolesf: the array goes to a temporary tiled GeoTIFF beside
    ``path`` (colour table, band descriptions, scales, dataset and per-band tags), which
    :func:`finalize_cog` copies through GDAL's COG driver (deflate, internal overviews when the
    image is larger than one block) and renames onto ``path``. Pixels are written unchanged.
    """
    arr = np.asarray(data)
    if arr.ndim == 2:
        arr = arr[None]
    path = Path(path)
    count, height, width = arr.shape
    block = 512 if min(height, width) > 512 else 256
    tmp = _temp_beside(path)
    try:
        dst = open_temp(tmp, height=height, width=width, count=count, dtype=arr.dtype.name, nodata=nodata,
                        crs=crs, transform=transform, block=block, compress="deflate")
        try:
            if colormap:  # before the pixels: libtiff cannot change the photometric tag afterwards
                dst.write_colormap(1, colormap)
            for b, text in enumerate(descriptions, start=1):
                dst.set_band_description(b, str(text)[:1000])
            for b, btags in enumerate(band_tags, start=1):
                dst.update_tags(b, **btags)
            if scales is not None:
                dst.scales = list(scales)
                dst.offsets = [0.0] * count
            if tags:
                dst.update_tags(**tags)
            dst.write(arr)
        finally:
            dst.close()
        finalize_cog(tmp, path, block=block, resampling=resampling, predictor=predictor)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _temp_beside(path: Path) -> Path:
    """A unique, not yet existing ``.NAME.XXXX.src.tif`` beside ``path`` (GDAL creates it)."""
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".src.tif", dir=path.parent)
    os.close(fd)
    os.unlink(name)
    return Path(name)
