"""Reading and writing rasters.

- :mod:`geolesf.io.hsi` — hyperspectral cubes and label maps from MATLAB ``.mat`` (v5 and
  v7.3/HDF5), ENVI (``.hdr`` + binary, :mod:`geolesf.io.envi`) and anything rasterio opens (GeoTIFF,
  PNG, ...), as the types of :mod:`geolesf.io.cube`.
- :mod:`geolesf.io.atomic` — every output written to a unique temporary file and renamed into place.
- :mod:`geolesf.io.cog` — Cloud-Optimized GeoTIFF building for the predictors.
- :mod:`geolesf.io.labels` — vector labels burnt onto a raster's grid.
- :mod:`geolesf.io.writers` — class-map GeoTIFFs with colour table and class names, PNG previews.
"""
