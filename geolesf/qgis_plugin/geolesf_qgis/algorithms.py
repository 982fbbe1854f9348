"""Processing algorithms: each turns QGIS parameters into one geolesf command line and runs it.

Inputs are read as files (geolesf reads rasters with GDAL/rasterio and vectors with OGR/pyogrio):
a raster layer must be a file GDAL opens, a vector layer that is not a plain file (a layer of a
multi-layer GeoPackage, a memory layer, a subset) is saved to a temporary GeoPackage first. Outputs
are QGIS destinations; every output geolesf writes beside them (``.qml`` styles) is listed so that
a failed or cancelled run leaves nothing (see :mod:`.runner`). Output layers QGIS adds to the
project get the style geolesf wrote (``loadDefaultStyle``: the ``.qml`` sidecar of a GeoTIFF, the
``layer_styles`` table of a GeoPackage).
"""

import os
from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsProcessingUtils,
    QgsVectorFileWriter,
)

from . import runner
from .settings import executable_setting


class _Styler(QgsProcessingLayerPostProcessorInterface):
    """Gives a layer QGIS adds after a run the style geolesf wrote for it."""

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS's name)
        message, ok = layer.loadDefaultStyle()
        if not ok:
            feedback.pushWarning(f"{layer.name()}: geolesf's style was not loaded ({message})")
        layer.triggerRepaint()


_STYLERS = []  # QGIS's context deletes a post-processor after use; Python must hold it until then


def style_on_load(context, output: str) -> None:
    """Apply the geolesf style when QGIS loads ``output`` at the end of the run."""
    if context.willLoadLayerOnCompletion(output):
        styler = _Styler()
        _STYLERS[:] = [*_STYLERS[-31:], styler]
        context.layerToLoadOnCompletionDetails(output).setPostProcessor(styler)


def advanced(param):
    param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    return param


class GeolesfAlgorithm(QgsProcessingAlgorithm):
    """What every geolesf algorithm shares: running geolesf, reading layers as files."""

    HELP = ""

    def createInstance(self):  # noqa: N802 (QGIS's names)
        return type(self)()

    def shortHelpString(self):  # noqa: N802
        return self.HELP

    def run_geolesf(self, args, feedback, outputs):
        try:
            return runner.run([str(a) for a in args], feedback, executable=executable_setting(),
                              outputs=[Path(o) for o in outputs])
        except runner.GeolesfRunError as exc:
            raise QgsProcessingException(str(exc)) from None

    def raster_file(self, parameters, name, context) -> str:
        layer = self.parameterAsRasterLayer(parameters, name, context)
        if layer is None:
            raise QgsProcessingException(self.invalidRasterError(parameters, name))
        source = layer.source()
        if layer.providerType() != "gdal" or not os.path.isfile(source):
            raise QgsProcessingException(f"{layer.name()}: geolesf reads raster files; save the layer as a "
                                         "GeoTIFF (Export → Save As…) and use that")
        return source

    def vector_file(self, parameters, name, context, feedback) -> str | None:
        layer = self.parameterAsVectorLayer(parameters, name, context)
        if layer is None:
            return None
        source = layer.source()
        if layer.providerType() == "ogr" and os.path.isfile(source) and not layer.subsetString():
            return source
        path = QgsProcessingUtils.generateTempFilename(f"{name.lower()}.gpkg")
        options = QgsVectorFileWriter.SaveVectorOptions()
        options.driverName = "GPKG"
        error, message, *_ = QgsVectorFileWriter.writeAsVectorFormatV3(
            layer, path, context.transformContext(), options)
        if error != QgsVectorFileWriter.NoError:
            raise QgsProcessingException(f"{layer.name()}: cannot save as a GeoPackage for geolesf: {message}")
        feedback.pushInfo(f"{layer.name()} saved to {path} for geolesf")
        return path

    def output_file(self, parameters, name, context, suffixes) -> str:
        out = self.parameterAsOutputLayer(parameters, name, context)
        if not out.lower().endswith(suffixes):
            raise QgsProcessingException(f"{out}: geolesf writes {' or '.join(suffixes)} files; choose such a file")
        return out

    def optional(self, parameters, name, context, kind=int):
        value = parameters.get(name)
        if value is None or value == "":
            return None
        if kind is int:
            return self.parameterAsInt(parameters, name, context)
        if kind is float:
            return self.parameterAsDouble(parameters, name, context)
        return self.parameterAsString(parameters, name, context).strip() or None


def sidecars(tif: str) -> list[str]:
    """A GeoTIFF output and the ``.qml`` style geolesf writes beside it."""
    return [tif, str(Path(tif).with_suffix(".qml"))]


class ClassifyAlgorithm(GeolesfAlgorithm):
    INPUT, CHECKPOINT, SHIPPED, OUTPUT = "INPUT", "CHECKPOINT", "SHIPPED", "OUTPUT"
    TILE, OVERLAP, BATCH, DEVICE = "TILE", "OVERLAP", "BATCH_SIZE", "DEVICE"
    HELP = ("Classifies every pixel of a raster with a geolesf checkpoint (geolesf predict): S²Mamba, "
            "unet or any other format geolesf reads. Give a checkpoint file (model.pt from geolesf train) or "
            "a shipped checkpoint as MODEL:TAG (e.g. s2mamba:indian_pines_dase). The class map is a "
            "Cloud-Optimized GeoTIFF in the scene's CRS with a .qml style (class names and colours) beside it.")

    def name(self):
        return "classify"

    def displayName(self):  # noqa: N802
        return "Classify raster with a checkpoint"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Scene"))
        self.addParameter(QgsProcessingParameterFile(
            self.CHECKPOINT, "Checkpoint file (model.pt)", QgsProcessingParameterFile.File,
            fileFilter="geolesf checkpoints (*.pt *.pth *.ckpt);;All files (*.*)", optional=True))
        self.addParameter(QgsProcessingParameterString(
            self.SHIPPED, "…or a shipped checkpoint (MODEL:TAG, e.g. s2mamba:indian_pines_dase)", optional=True))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.TILE, "Tile side in pixels (default 512)", minValue=16, optional=True)))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.OVERLAP, "Tile overlap in pixels (default 64)", minValue=0, optional=True)))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.BATCH, "Batch size (default: the model's)", minValue=1, optional=True)))
        self.addParameter(advanced(QgsProcessingParameterString(self.DEVICE, "Torch device", defaultValue="cpu")))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Class map"))

    def checkpoint(self, parameters, context) -> str:
        path = self.optional(parameters, self.CHECKPOINT, context, str)
        shipped = self.optional(parameters, self.SHIPPED, context, str)
        if (path is None) == (shipped is None):
            raise QgsProcessingException("give either a checkpoint file or a shipped checkpoint (MODEL:TAG), "
                                         "not both and not none")
        return path or shipped

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        scene = self.raster_file(parameters, self.INPUT, context)
        checkpoint = self.checkpoint(parameters, context)
        out = self.output_file(parameters, self.OUTPUT, context, (".tif", ".tiff"))
        args = ["predict", scene, "--checkpoint", checkpoint, "--out", out, "--overwrite", "--no-preview",
                "--device", self.parameterAsString(parameters, self.DEVICE, context) or "cpu"]
        for flag, key in (("--tile", self.TILE), ("--overlap", self.OVERLAP), ("--batch-size", self.BATCH)):
            value = self.optional(parameters, key, context)
            if value is not None:
                args += [flag, value]
        self.run_geolesf(args, feedback, sidecars(out))
        style_on_load(context, out)
        return {self.OUTPUT: out}


class ExportAlgorithm(GeolesfAlgorithm):
    INPUT, CONNECTIVITY, OUTPUT = "INPUT", "CONNECTIVITY", "OUTPUT"
    HELP = ("Turns a geolesf class map into polygons (geolesf export): one feature per connected region with "
            "class_id, class_name and area_m2, in the class map's CRS. The GeoPackage carries its QGIS style "
            "(categorised by class, the class map's colours) as its default style.")

    def name(self):
        return "export_gpkg"

    def displayName(self):  # noqa: N802
        return "Export class map to a styled GeoPackage"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Class map (from geolesf)"))
        self.addParameter(QgsProcessingParameterEnum(
            self.CONNECTIVITY, "Pixel connectivity", options=["4 (edges)", "8 (edges and corners)"], defaultValue=0))
        self.addParameter(QgsProcessingParameterVectorDestination(
            self.OUTPUT, "Polygons", QgsProcessing.TypeVectorPolygon))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        cmap = self.raster_file(parameters, self.INPUT, context)
        out = self.output_file(parameters, self.OUTPUT, context, (".gpkg",))
        connectivity = (4, 8)[self.parameterAsEnum(parameters, self.CONNECTIVITY, context)]
        args = ["export", cmap, "--gpkg", out, "--layer", Path(out).stem, "--connectivity", connectivity,
                "--no-qml", "--overwrite"]
        self.run_geolesf(args, feedback, [out])
        style_on_load(context, out)
        return {self.OUTPUT: out}


class PseudoLabelAlgorithm(GeolesfAlgorithm):
    INPUT, CHECKPOINT, STAGE, MARGIN, TAGS, OUTPUT = "INPUT", "CHECKPOINT", "STAGE", "MARGIN", "TAGS", "OUTPUT"
    TILE, DEVICE = "TILE", "DEVICE"
    STAGES = ("seeds", "final")
    HELP = ("Writes georeferenced pseudo-labels of a scene with a weakly supervised checkpoint (geolesf "
            "pseudo-label; geolesf-wsss/1 from geolesf train with task: wsss): band 1 the label (255 where "
            "uncertain or no data), band 2 the confidence (margin × 254).")

    def name(self):
        return "pseudo_label"

    def displayName(self):  # noqa: N802
        return "Write pseudo-labels (weak supervision)"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Scene (RGB, 8-bit)"))
        self.addParameter(QgsProcessingParameterFile(
            self.CHECKPOINT, "WSSS checkpoint (model.pt)", QgsProcessingParameterFile.File,
            fileFilter="geolesf checkpoints (*.pt);;All files (*.*)"))
        self.addParameter(QgsProcessingParameterEnum(self.STAGE, "Stage", options=list(self.STAGES), defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            self.MARGIN, "Minimum score margin (default: the checkpoint's)", QgsProcessingParameterNumber.Double,
            minValue=0.0, maxValue=1.0, optional=True))
        self.addParameter(QgsProcessingParameterString(
            self.TAGS, "Classes present in the whole scene (comma-separated; default: detected per tile)",
            optional=True))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.TILE, "Tile side in pixels (default 512)", minValue=16, optional=True)))
        self.addParameter(advanced(QgsProcessingParameterString(self.DEVICE, "Torch device", defaultValue="cpu")))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Pseudo-labels"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        scene = self.raster_file(parameters, self.INPUT, context)
        checkpoint = self.parameterAsFile(parameters, self.CHECKPOINT, context)
        out = self.output_file(parameters, self.OUTPUT, context, (".tif", ".tiff"))
        args = ["pseudo-label", scene, "--checkpoint", checkpoint, "--out", out, "--overwrite",
                "--stage", self.STAGES[self.parameterAsEnum(parameters, self.STAGE, context)],
                "--device", self.parameterAsString(parameters, self.DEVICE, context) or "cpu"]
        for flag, key, kind in (("--margin", self.MARGIN, float), ("--tags", self.TAGS, str),
                                ("--tile", self.TILE, int)):
            value = self.optional(parameters, key, context, kind)
            if value is not None:
                args += [flag, value]
        self.run_geolesf(args, feedback, sidecars(out))
        return {self.OUTPUT: out}
