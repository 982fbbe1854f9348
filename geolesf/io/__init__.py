"""Reading and writing rasters.

- :mod:`geolesf.io.hsi` — hyperspectral cubes and label maps from MATLAB ``.mat`` (v5 and
  v7.3/HDF5), ENVI (``.hdr`` + binary) and anything rasterio opens (GeoTIFF, PNG, ...).
- :mod:`geolesf.io.writers` — class-map GeoTIFFs with colour table and class names, PNG previews.
"""
