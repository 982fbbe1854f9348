"""Drive the geolesf QGIS plugin in real QGIS (headless PyQGIS) and report what happened, as JSON.

Run with Debian's interpreter (PyQGIS imports only there)::

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis_provider/provider_check.py CONFIG.json

``CONFIG.json``: ``zip`` (the built plugin), ``executable`` (the geolesf to run), ``work`` (a folder),
``scene`` (a georeferenced GeoTIFF the checkpoint reads), ``checkpoint`` (MODEL:TAG), ``polygons``
(training polygons on the scene, field ``class``), ``bad_scene`` (an RGB GeoTIFF: the wrong band count
for the checkpoint), ``unet_checkpoint`` (a unet checkpoint file for RGB scenes).
One QGIS process runs every check, as QGIS would:

1. the zip is extracted into a plugins folder and the plugin loaded by QGIS's own plugin machinery
   (``qgis.utils``: metadata, ``classFactory``, ``initProcessing``); the provider's algorithms are listed;
2. ``geolesf:classify`` with ``processing.runAndLoadResults`` (the class map is added to the project
   through the provider's post-processor), progress values recorded;
3. ``geolesf:export_gpkg`` on that class map;
   ``geolesf:train`` (random forest) from the scene and the polygons, its class map loaded styled;
4. ``geolesf:classify`` of the RGB scene with the unet checkpoint file (progress over 12 tiles), and
   ``geolesf:pseudo_label`` with it (not a WSSS checkpoint: geolesf's error);
   ``geolesf:classify`` of it with ``checkpoint`` (wrong band count): the exception and the error QGIS shows;
5. ``geolesf:classify`` cancelled as soon as geolesf's temporary class map appears beside the output
   (a hidden file other than the output lock); the folder's files afterwards.

Layers are removed before ``exitQgis()`` (the interpreter crashes at exit otherwise). Not part of the
package: PyQGIS is not a geolesf dependency.
"""

from __future__ import annotations

import json
import sys
import time
import zipfile
from pathlib import Path


def _feedback_class():
    from qgis.core import QgsProcessingFeedback

    class Recorder(QgsProcessingFeedback):
        """Records progress and messages; cancels itself once ``cancel_when()`` is true."""

        def __init__(self, cancel_when=None):
            super().__init__()
            self.progress, self.errors, self.infos, self.cancel_when = [], [], [], cancel_when
            self.progressChanged.connect(self.progress.append)

        def reportError(self, error, fatalError=False):  # noqa: N802, N803 (QGIS's names)
            self.errors.append(error)

        def pushInfo(self, info):  # noqa: N802
            self.infos.append(info)

        def isCanceled(self):  # noqa: N802
            if self.cancel_when is not None and not super().isCanceled() and self.cancel_when():
                self.cancel()
            return super().isCanceled()

    return Recorder


def load_plugin(zip_path: str, work: Path) -> dict:
    import qgis.utils
    from qgis.core import QgsApplication

    plugins = work / "plugins"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(plugins)
    qgis.utils.plugin_paths.insert(0, str(plugins))
    sys.path.insert(0, str(plugins))
    qgis.utils.updateAvailablePlugins()
    name = "geolesf_qgis"
    info = {"available": name in qgis.utils.available_plugins,
            "metadata": {k: qgis.utils.pluginMetadata(name, k)
                         for k in ("name", "qgisMinimumVersion", "hasProcessingProvider", "version")}}
    info["loaded"] = qgis.utils.loadPlugin(name) and qgis.utils.startProcessingPlugin(name)
    info["module"] = sys.modules[name].__file__ if name in sys.modules else None
    provider = QgsApplication.processingRegistry().providerById("geolesf")
    info["algorithms"] = sorted(a.id() for a in provider.algorithms()) if provider else []
    return info


def raster_info(layer) -> dict:
    e = layer.extent()
    info = {"valid": layer.isValid(), "crs": layer.crs().authid(), "renderer": layer.renderer().type(),
            "extent": [e.xMinimum(), e.yMinimum(), e.xMaximum(), e.yMaximum()]}
    if info["renderer"] == "paletted":
        info["classes"] = [{"value": int(c.value), "label": c.label, "color": c.color.name()}
                           for c in layer.renderer().classes()]
    return info


def vector_info(layer) -> dict:
    import itertools

    from qgis.core import QgsGeometry

    message, ok = layer.loadDefaultStyle()
    renderer = layer.renderer()
    e = layer.extent()
    info = {"valid": layer.isValid(), "crs": layer.crs().authid(), "style_message": message, "style_loaded": ok,
            "renderer": renderer.type(), "features": layer.featureCount(),
            "fields": [f.name() for f in layer.fields()],
            "extent": [e.xMinimum(), e.yMinimum(), e.xMaximum(), e.yMaximum()]}
    if renderer.type() == "categorizedSymbol":
        info["attribute"] = renderer.classAttribute()
        info["classes"] = [{"value": c.value(), "label": c.label(), "color": c.symbol().color().name()}
                           for c in renderer.categories()]
    union = QgsGeometry.unaryUnion([f.geometry() for f in itertools.islice(layer.getFeatures(), 100000)])
    info["union_area"] = union.area()
    return info


def classify_and_export(cfg: dict, work: Path) -> dict:
    import processing
    from qgis.core import QgsProcessingContext, QgsProject, QgsRasterLayer, QgsVectorLayer

    recorder = _feedback_class()
    out = {}
    feedback, context = recorder(), QgsProcessingContext()
    context.setProject(QgsProject.instance())
    start = time.perf_counter()
    result = processing.runAndLoadResults("geolesf:classify", {
        "INPUT": cfg["scene"], "SHIPPED": cfg["checkpoint"], "OUTPUT": str(work / "map.tif")},
        feedback=feedback, context=context)
    loaded = QgsProject.instance().mapLayers().values()
    out["classify"] = {"result": result, "seconds": time.perf_counter() - start, "progress": feedback.progress,
                       "infos": feedback.infos, "errors": feedback.errors,
                       "project_layers": [raster_info(lyr) for lyr in loaded if isinstance(lyr, QgsRasterLayer)]}
    QgsProject.instance().removeAllMapLayers()
    feedback, context = recorder(), QgsProcessingContext()
    context.setProject(QgsProject.instance())
    result = processing.runAndLoadResults("geolesf:export_gpkg", {
        "INPUT": str(work / "map.tif"), "OUTPUT": str(work / "map.gpkg")}, feedback=feedback, context=context)
    added = [{"renderer": lyr.renderer().type(), "attribute": getattr(lyr.renderer(), "classAttribute", str)()}
             for lyr in QgsProject.instance().mapLayers().values() if isinstance(lyr, QgsVectorLayer)]
    QgsProject.instance().removeAllMapLayers()
    layer = QgsVectorLayer(result["OUTPUT"], "polygons", "ogr")
    out["export"] = {"result": result, "errors": feedback.errors, "layer": vector_info(layer), "project_layers": added}
    raster = QgsRasterLayer(str(work / "map.tif"), "map")
    out["map_file"] = raster_info(raster)
    del layer, raster
    return out


def train(cfg: dict, work: Path) -> dict:
    import processing
    from qgis.core import QgsProcessingContext, QgsProject, QgsRasterLayer

    feedback, context = _feedback_class()(), QgsProcessingContext()
    context.setProject(QgsProject.instance())
    result = processing.runAndLoadResults("geolesf:train", {
        "INPUT": cfg["scene"], "LABELS": cfg["polygons"], "FIELD": "class", "MODEL": 1,
        "OUTPUT": str(work / "run")}, feedback=feedback, context=context)
    loaded = [raster_info(lyr) for lyr in QgsProject.instance().mapLayers().values() if isinstance(lyr, QgsRasterLayer)]
    QgsProject.instance().removeAllMapLayers()
    return {"result": result, "errors": feedback.errors, "infos": feedback.infos, "project_layers": loaded,
            "run_folder": sorted(p.name for p in (work / "run").iterdir())}


def with_checkpoint_file(cfg: dict, work: Path) -> dict:
    """Classify the RGB scene with a checkpoint *file* (unet, tiles of 256 px: progress in steps), and
    pseudo-label it with the same (wrong kind of) checkpoint."""
    import processing
    from qgis.core import QgsProcessingException, QgsRasterLayer

    feedback = _feedback_class()()
    result = processing.run("geolesf:classify", {
        "INPUT": cfg["bad_scene"], "CHECKPOINT": cfg["unet_checkpoint"], "TILE": 256, "OVERLAP": 32,
        "OUTPUT": str(work / "rgb_map.tif")}, feedback=feedback)
    layer = QgsRasterLayer(result["OUTPUT"], "rgb map")
    layer.loadDefaultStyle()
    info = {"classify": {"progress": feedback.progress, "errors": feedback.errors, "layer": raster_info(layer)}}
    del layer
    feedback = _feedback_class()()
    (work / "pseudo").mkdir()
    try:
        processing.run("geolesf:pseudo_label", {
            "INPUT": cfg["bad_scene"], "CHECKPOINT": cfg["unet_checkpoint"], "STAGE": 0, "MARGIN": 0.2,
            "TILE": 256, "OUTPUT": str(work / "pseudo" / "labels.tif")}, feedback=feedback)
        info["pseudo_label"] = None
    except QgsProcessingException as exc:
        info["pseudo_label"] = str(exc)
    info["pseudo_label_left"] = sorted(p.name for p in (work / "pseudo").iterdir())
    return info


def bad_input(cfg: dict, work: Path) -> dict:
    import processing
    from qgis.core import QgsProcessingException

    feedback = _feedback_class()()
    params = {"INPUT": cfg["bad_scene"], "SHIPPED": cfg["checkpoint"], "OUTPUT": str(work / "bad" / "map.tif")}
    (work / "bad").mkdir()
    info = {}
    try:
        processing.run("geolesf:classify", params, feedback=feedback)
        info["raised"] = None
    except QgsProcessingException as exc:
        info["raised"] = str(exc)
    info["reported"] = feedback.errors
    info["left"] = sorted(p.name for p in (work / "bad").iterdir())
    return info


def cancel(cfg: dict, work: Path) -> dict:
    import processing
    from qgis.core import QgsProcessingException

    folder = work / "cancel"
    folder.mkdir()
    seen = []

    def temp_file_appeared() -> bool:
        """A hidden file other than the output lock: geolesf is writing the class map."""
        hidden = [p.name for p in folder.iterdir() if p.name.startswith(".")]
        seen.extend(n for n in hidden if n not in seen)
        return any(not n.endswith(".lock") for n in hidden)

    feedback = _feedback_class()(cancel_when=temp_file_appeared)
    info = {}
    start = time.perf_counter()
    try:
        processing.run("geolesf:classify", {"INPUT": cfg["scene"], "SHIPPED": cfg["checkpoint"],
                                            "OUTPUT": str(folder / "map.tif")}, feedback=feedback)
        info["raised"] = None
    except QgsProcessingException as exc:
        info["raised"] = str(exc)
    info.update(seconds=time.perf_counter() - start, canceled=feedback.isCanceled(), seen=seen,
                errors=feedback.errors, left=sorted(p.name for p in folder.iterdir()))
    return info


def main(argv: list[str]) -> int:
    import os

    # QGIS's settings (the provider's executable among them) and profile go to the work folder, not
    # to the user's ~/.config and ~/.local/share
    work = Path(json.loads(Path(argv[0]).read_text())["work"])
    os.environ["XDG_CONFIG_HOME"], os.environ["XDG_DATA_HOME"] = str(work / "config"), str(work / "data")
    from qgis.core import QgsApplication, QgsProject

    cfg = json.loads(Path(argv[0]).read_text())
    work = Path(cfg["work"])
    app = QgsApplication([], False, str(work / "profile"))
    app.initQgis()
    sys.path.append(str(Path(QgsApplication.pkgDataPath()) / "python" / "plugins"))
    from processing.core.Processing import Processing
    from processing.core.ProcessingConfig import ProcessingConfig

    Processing.initialize()
    report = {"qgis_version": __import__("qgis.core").core.Qgis.QGIS_VERSION}
    report["plugin"] = load_plugin(cfg["zip"], work)
    ProcessingConfig.setSettingValue("GEOLESF_EXECUTABLE", cfg["executable"])
    checks = (("run", classify_and_export), ("train", train), ("checkpoint_file", with_checkpoint_file),
              ("bad_input", bad_input), ("cancel", cancel))
    for name, check in checks:
        try:
            report[name] = check(cfg, work)
        except Exception as exc:  # noqa: BLE001 — reported, the test names it
            import traceback

            report[name] = {"crashed": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    print(json.dumps(report, default=str))
    QgsProject.instance().removeAllMapLayers()
    app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
