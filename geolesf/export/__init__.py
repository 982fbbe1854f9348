"""GIS deliverables from geolesf class maps.

- :mod:`geolesf.export.vector` — polygonise a class map into a GeoPackage in the scene's CRS
  (class id, name, area), styled for QGIS.
- :mod:`geolesf.export.qgis` — ``.qml`` styles (paletted raster, categorised vector) and the
  GeoPackage ``layer_styles`` table.
- :mod:`geolesf.export.stac` — a STAC Item beside a class map (classes, projection, provenance),
  validated offline.
- :mod:`geolesf.export.onnx` — a checkpoint as an ONNX model with Deepness (QGIS) and geolesf metadata
  (``geolesf export-model``; ``geolesf predict --engine onnxruntime`` runs it).
- :mod:`geolesf.xarray.export` — a class-map ``xarray.DataArray`` → COG + QML + GeoPackage
  (``DataArray.geolesf.to_qgis``), written chunk by chunk.
"""
