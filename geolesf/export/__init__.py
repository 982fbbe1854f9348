"""GIS deliverables from geolesf class maps.

- :mod:`geolesf.export.vector` — polygonise a class map into a GeoPackage in the scene's CRS
  (class id, name, area), styled for QGIS.
- :mod:`geolesf.export.qgis` — ``.qml`` styles (paletted raster, categorised vector) and the
  GeoPackage ``layer_styles`` table.
"""
