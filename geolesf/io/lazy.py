"""``open_cube(spec) -> CubeSource``: any cube geolesf reads lazily, window by window.

A sensor product (folder or metadata file, :mod:`geolesf.io.sensors`) first, then an ENVI cube
(:mod:`geolesf.io.envi`), then anything rasterio opens (:class:`geolesf.io.source.RasterCubeSource`).
See :mod:`geolesf.io.source` for what a source reads.
"""

from __future__ import annotations

from pathlib import Path

from geolesf.errors import DataError
from geolesf.io import envi
from geolesf.io.cube import resolve_path
from geolesf.io.sensors import detect
from geolesf.io.source import CubeSource, RasterCubeSource


def open_cube(spec: str | Path) -> CubeSource:
    """Open a cube lazily: a sensor product (folder or metadata file), an ENVI cube or any raster.

    Close it when done (``with open_cube(path) as src: ...``).
    """
    path = resolve_path(spec)
    product = detect(path)
    if product is not None:
        return product.open(path)
    if path.suffix.lower() == ".mat" or ":" in path.name:
        raise DataError(f"{spec}: MATLAB cubes have no lazy reader; read them whole with read_cube")
    if envi.is_envi(path):
        return envi.open_envi(path)
    return RasterCubeSource(path)
