"""Open geolesf outputs in real QGIS (headless PyQGIS) and report what a user would see, as JSON.

Run with Debian's interpreter, which is the one PyQGIS imports under (see shared/reference/qgis.md)::

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis_check.py MAP.tif [LAYERS.gpkg ...]

Every file is added as QGIS adds it (``loadDefaultStyle()``: the ``.qml`` sidecar of a raster, the
``layer_styles`` table of a GeoPackage). The JSON on stdout holds, per layer: validity, CRS (authid),
extent ``[xmin, ymin, xmax, ymax]`` (and, for every layer after the first, ``extent_in_first_crs``),
the style message, the renderer type and its classes (value,
label, ``#rrggbb`` colour) for paletted rasters and categorised vectors. Layers are deleted before
``exitQgis()`` (otherwise the interpreter crashes at exit). Not part of the package: PyQGIS is not a
geolesf dependency.
"""

from __future__ import annotations

import json
import sys


def _extent(layer) -> list[float]:
    e = layer.extent()
    return [e.xMinimum(), e.yMinimum(), e.xMaximum(), e.yMaximum()]


def _raster(path: str) -> tuple[object, dict]:
    from qgis.core import QgsRasterLayer

    layer = QgsRasterLayer(path, "raster")
    info = {"path": path, "kind": "raster", "valid": layer.isValid()}
    if not layer.isValid():
        return layer, info
    message, ok = layer.loadDefaultStyle()
    renderer = layer.renderer()
    info.update(crs=layer.crs().authid(), extent=_extent(layer), style_loaded=bool(ok), style_message=message,
                renderer=renderer.type(), width=layer.width(), height=layer.height(),
                pixel_size=[layer.rasterUnitsPerPixelX(), layer.rasterUnitsPerPixelY()])
    if renderer.type() == "paletted":
        info["classes"] = [{"value": int(c.value), "label": c.label, "color": c.color.name()}
                           for c in renderer.classes()]
    return layer, info


def _vector(path: str) -> tuple[object, dict]:
    from qgis.core import QgsVectorLayer

    layer = QgsVectorLayer(path, "vector", "ogr")
    info = {"path": path, "kind": "vector", "valid": layer.isValid()}
    if not layer.isValid():
        return layer, info
    message, ok = layer.loadDefaultStyle()
    renderer = layer.renderer()
    info.update(crs=layer.crs().authid(), extent=_extent(layer), style_loaded=bool(ok), style_message=message,
                renderer=renderer.type(), features=layer.featureCount(),
                fields=[f.name() for f in layer.fields()])
    if renderer.type() == "categorizedSymbol":
        info["attribute"] = renderer.classAttribute()
        info["classes"] = [{"value": c.value(), "label": c.label(), "color": c.symbol().color().name()}
                           for c in renderer.categories()]
    return layer, info


def _reprojected(layer, first) -> list[float]:
    """``layer``'s extent transformed into the CRS of ``first`` (as QGIS reprojects on the fly)."""
    from qgis.core import QgsCoordinateTransform, QgsProject

    e = QgsCoordinateTransform(layer.crs(), first.crs(), QgsProject.instance()).transformBoundingBox(layer.extent())
    return [e.xMinimum(), e.yMinimum(), e.xMaximum(), e.yMaximum()]


def main(paths: list[str]) -> int:
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    layers, report = [], []
    for path in paths:
        layer, info = _raster(path) if path.lower().endswith((".tif", ".tiff")) else _vector(path)
        if layers and info["valid"] and layers[0].isValid():
            info["extent_in_first_crs"] = _reprojected(layer, layers[0])
        layers.append(layer)
        report.append(info)
    print(json.dumps({"qgis_version": __import__("qgis.core").core.Qgis.QGIS_VERSION, "layers": report}))
    del layer
    layers.clear()
    app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
