"""Reading and writing rasters.

- :mod:`geolesf.io.hsi` — hyperspectral cubes and label maps from MATLAB ``.mat`` (v5 and
  v7.3/HDF5), ENVI (``.hdr`` + binary, :mod:`geolesf.io.envi`) and anything rasterio opens (GeoTIFF,
  PNG, ...), as the types of :mod:`geolesf.io.cube`; sensor products first (:mod:`geolesf.io.sensors`:
  EnMAP L2A, DESIS L2A, PRISMA L2D, AVIRIS-NG / AVIRIS-3 L2).
- :mod:`geolesf.io.lazy` / :mod:`geolesf.io.source` — ``open_cube(spec)``: the same cubes opened lazily,
  read window by window.
- :mod:`geolesf.io.bands` — band selection (``data.drop_bands``: water-vapour windows, ranges, numbers).
- :mod:`geolesf.io.atomic` — every output written to a unique temporary file and renamed into place.
- :mod:`geolesf.io.cog` — Cloud-Optimized GeoTIFF building for the predictors.
- :mod:`geolesf.io.labels` — vector labels burnt onto a raster's grid.
- :mod:`geolesf.io.writers` — class-map GeoTIFFs with colour table and class names, PNG previews.
"""
