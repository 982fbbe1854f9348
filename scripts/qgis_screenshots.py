"""Render the screenshots of docs/qgis_plugin.md with real QGIS, headless.

Run with Debian's interpreter (PyQGIS imports only there), from the repository root::

    geolesf qgis-plugin --out /tmp/geolesf_qgis.zip
    QT_QPA_PLATFORM=offscreen /usr/bin/python3 scripts/qgis_screenshots.py --zip /tmp/geolesf_qgis.zip \\
        --geolesf "$(command -v geolesf)" --scene /tmp/indian_pines.tif --out docs/img

``--scene``: a georeferenced Indian Pines GeoTIFF, e.g. written with ``tests/scenes.py``
(``python -c "from tests import scenes; from pathlib import Path; scenes.write_scene(Path('/tmp/indian_pines.tif'))"``).
The plugin is loaded from the zip as QGIS loads it; classify (shipped ``s2mamba:indian_pines_dase``) and
export run through Processing with the given geolesf executable (about a minute for the 145×145 scene on
two CPU cores). Written: ``qgis_toolbox.png`` (the provider in the Processing Toolbox),
``qgis_classify_dialog.png`` and ``qgis_export_dialog.png`` (the algorithm dialogs), ``qgis_class_map.png``
(the class map as QGIS draws it with geolesf's style, and the exported polygons' outlines) and
``qgis_legend.png`` (the layer's legend: class names and colours).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import zipfile
from pathlib import Path

SIZE = (900, 640)


def _start(zip_path: str, exe: str, plugins: Path):
    import qgis.utils
    from qgis.core import QgsApplication

    sys.path.append(str(Path(QgsApplication.pkgDataPath()) / "python" / "plugins"))
    from processing.core.Processing import Processing
    from processing.core.ProcessingConfig import ProcessingConfig

    Processing.initialize()
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(plugins)
    qgis.utils.plugin_paths.insert(0, str(plugins))
    sys.path.insert(0, str(plugins))
    qgis.utils.updateAvailablePlugins()
    if not (qgis.utils.loadPlugin("geolesf_qgis") and qgis.utils.startProcessingPlugin("geolesf_qgis")):
        raise SystemExit("error: the geolesf plugin did not load from the zip")
    ProcessingConfig.setSettingValue("GEOLESF_EXECUTABLE", exe)


def _save(widget, path: Path, size: tuple[int, int] = SIZE) -> None:
    widget.resize(*size)
    widget.show()
    from qgis.PyQt.QtWidgets import QApplication

    for _ in range(5):
        QApplication.processEvents()
    widget.grab().save(str(path), "PNG")
    widget.close()
    print(f"wrote {path}")


def toolbox(out: Path) -> None:
    from qgis.core import QgsApplication
    from qgis.gui import QgsProcessingToolboxProxyModel, QgsProcessingToolboxTreeView

    view = QgsProcessingToolboxTreeView(None, QgsApplication.processingRegistry())
    view.setFilters(QgsProcessingToolboxProxyModel.FilterToolbox)
    view.setFilterString("geolesf")
    view.setHeaderHidden(True)
    view.expandAll()
    view.clearSelection()
    view.setWindowTitle("Processing Toolbox")
    _save(view, out / "qgis_toolbox.png", (420, 260))


def dialog(alg_id: str, params: dict, path: Path) -> None:
    import qgis.utils
    from qgis.core import QgsApplication
    from unittest.mock import MagicMock

    from qgis.gui import QgsMapCanvas

    if qgis.utils.iface is None:  # no QGIS window: the dialogs ask the interface for a parent and a canvas
        iface = MagicMock()
        iface.mainWindow.return_value = None
        iface.mapCanvas.return_value = QgsMapCanvas()
        qgis.utils.iface = iface
    from processing.gui.AlgorithmDialog import AlgorithmDialog

    dlg = AlgorithmDialog(QgsApplication.processingRegistry().createAlgorithmById(alg_id), parent=None)
    dlg.setParameters(params)
    _save(dlg, path)


def render(map_tif: str, gpkg: str, out: Path) -> None:
    from qgis.core import (
        QgsLayerTreeLayer,
        QgsLayerTreeModel,
        QgsMapRendererParallelJob,
        QgsMapSettings,
        QgsRasterLayer,
        QgsVectorLayer,
    )
    from qgis.PyQt.QtCore import QSize, Qt
    from qgis.PyQt.QtGui import QColor

    raster = QgsRasterLayer(map_tif, "class map")
    raster.loadDefaultStyle()
    polygons = QgsVectorLayer(gpkg, "polygons", "ogr")
    polygons.loadDefaultStyle()
    # the polygons' outlines over the raster (their fill would hide the class map)
    renderer = polygons.renderer()
    for i, category in enumerate(renderer.categories()):  # categories() are copies
        symbol = category.symbol().clone()
        symbol.symbolLayer(0).setFillColor(QColor(0, 0, 0, 0))
        symbol.symbolLayer(0).setStrokeStyle(Qt.SolidLine)  # geolesf's fills have no outline
        symbol.symbolLayer(0).setStrokeColor(QColor("#222222"))
        symbol.symbolLayer(0).setStrokeWidth(0.3)
        renderer.updateCategorySymbol(i, symbol)
    settings = QgsMapSettings()
    settings.setLayers([polygons, raster])
    settings.setDestinationCrs(raster.crs())
    settings.setExtent(raster.extent())
    settings.setOutputSize(QSize(560, 560))
    settings.setBackgroundColor(QColor("white"))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    job.renderedImage().save(str(out / "qgis_class_map.png"), "PNG")
    print(f"wrote {out / 'qgis_class_map.png'}")
    from qgis.gui import QgsLayerTreeView

    from qgis.core import QgsProject

    QgsProject.instance().addMapLayer(raster)
    model = QgsLayerTreeModel(QgsProject.instance().layerTreeRoot())
    view = QgsLayerTreeView()
    view.setModel(model)
    node = QgsProject.instance().layerTreeRoot().findLayer(raster.id())
    assert isinstance(node, QgsLayerTreeLayer)
    view.expandAll()
    _save(view, out / "qgis_legend.png", (360, 450))
    QgsProject.instance().removeAllMapLayers()
    del polygons


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", required=True, help="plugin zip from 'geolesf qgis-plugin'")
    parser.add_argument("--geolesf", required=True, help="geolesf executable the provider runs")
    parser.add_argument("--scene", required=True, help="georeferenced Indian Pines GeoTIFF (200 bands)")
    parser.add_argument("--out", default="docs/img", help="folder for the PNGs (default docs/img)")
    args = parser.parse_args(argv)
    from qgis.core import QgsApplication

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # a throw-away QGIS profile and settings (the provider's executable), not the user's
        os.environ["XDG_CONFIG_HOME"], os.environ["XDG_DATA_HOME"] = str(work / "config"), str(work / "data")
        app = QgsApplication([], True, str(work / "profile"))
        app.initQgis()
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        _start(args.zip, args.geolesf, work / "plugins")
        import processing

        toolbox(out)
        map_tif, gpkg = str(work / "indian_pines_s2mamba.tif"), str(work / "indian_pines_s2mamba.gpkg")
        params = {"INPUT": args.scene, "SHIPPED": "s2mamba:indian_pines_dase", "OUTPUT": map_tif}
        dialog("geolesf:classify", {**params, "OUTPUT": "TEMPORARY_OUTPUT"}, out / "qgis_classify_dialog.png")
        processing.run("geolesf:classify", params)
        dialog("geolesf:export_gpkg", {"INPUT": map_tif, "OUTPUT": "TEMPORARY_OUTPUT"}, out / "qgis_export_dialog.png")
        processing.run("geolesf:export_gpkg", {"INPUT": map_tif, "OUTPUT": gpkg})
        render(map_tif, gpkg, out)
        app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
