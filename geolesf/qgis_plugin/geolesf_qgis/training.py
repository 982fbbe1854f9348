"""The train algorithm: a raster layer + training polygons with a class field → a geolesf run folder.

Per-pixel hyperspectral models (``s2mamba``, ``rf``, ``svm``) run ``geolesf train --model M --cube
SCENE --labels POLYGONS --label-field FIELD``: the polygons are burnt onto the scene grid (reprojected
when their CRS differs), the run classifies the whole scene into ``classmap.tif``. ``unet`` runs the
segmentation task (``--set task=segmentation --set data.image=… --set data.labels=…``): chips of the
scene, pixels outside every polygon are background (class 0); it writes the checkpoint only — classify
a scene with it through "Classify raster with a checkpoint".
"""

import json
import os

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingOutputFile,
    QgsProcessingOutputRasterLayer,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from .algorithms import GeolesfAlgorithm, advanced, style_on_load

MODELS = ("s2mamba", "rf", "svm", "unet")
DEEP = ("s2mamba", "unet")


def _quoted(path: str) -> str:
    """A path as a YAML (JSON) string for ``--set KEY=VALUE``."""
    return json.dumps(path)


class TrainAlgorithm(GeolesfAlgorithm):
    INPUT, LABELS, FIELD, MODEL, EPOCHS, PATCH = "INPUT", "LABELS", "FIELD", "MODEL", "EPOCHS", "PATCH_SIZE"
    VALIDATION, OUTPUT, CHECKPOINT, CLASS_MAP, METRICS = "VALIDATION", "OUTPUT", "CHECKPOINT", "CLASS_MAP", "METRICS"
    HELP = ("Trains a geolesf model from a raster and training polygons (geolesf train). The class field holds "
            "class ids or names. s2mamba, rf and svm classify each pixel from its spectrum (hyperspectral or "
            "multispectral scenes) and classify the whole scene at the end (Class map output); unet learns a "
            "dense segmentation with background outside the polygons. The run folder holds model.pt "
            "(use it with 'Classify raster with a checkpoint'), metrics.json and config.yaml.")

    def name(self):
        return "train"

    def displayName(self):  # noqa: N802
        return "Train a model from polygons"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Scene"))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.LABELS, "Training polygons", [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterField(
            self.FIELD, "Class field (ids or names; empty for unet: every polygon is class 1)",
            parentLayerParameterName=self.LABELS, optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.MODEL, "Model", options=list(MODELS), defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            self.EPOCHS, "Epochs (s2mamba, unet; default: geolesf's)", minValue=1, optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.VALIDATION, "Validation polygons (s2mamba, rf, svm; default: a split of the training pixels)",
            [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.PATCH, "Patch side (odd; s2mamba, rf, svm)", minValue=1, optional=True)))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT, "Run folder"))
        self.addOutput(QgsProcessingOutputFile(self.CHECKPOINT, "Checkpoint (model.pt)"))
        self.addOutput(QgsProcessingOutputFile(self.METRICS, "Metrics (metrics.json)"))
        self.addOutput(QgsProcessingOutputRasterLayer(self.CLASS_MAP, "Class map of the scene"))

    def _args(self, parameters, context, feedback, out):
        model = MODELS[self.parameterAsEnum(parameters, self.MODEL, context)]
        scene = self.raster_file(parameters, self.INPUT, context)
        labels = self.vector_file(parameters, self.LABELS, context, feedback)
        field = self.optional(parameters, self.FIELD, context, str)
        epochs = self.optional(parameters, self.EPOCHS, context)
        if model == "unet":
            args = ["train", "--set", "task=segmentation", "--set", "model.name=unet",
                    "--set", f"data.image={_quoted(scene)}", "--set", f"data.labels={_quoted(labels)}"]
            if field:
                args += ["--set", f"data.label_field={_quoted(field)}"]
            if epochs is not None:
                args += ["--set", f"trainer.epochs={epochs}"]
            return args + ["--out", out, "--overwrite"]
        if not field:
            raise QgsProcessingException(f"{model} needs the class field of the training polygons")
        args = ["train", "--model", model, "--cube", scene, "--labels", labels, "--label-field", field]
        validation = self.vector_file(parameters, self.VALIDATION, context, feedback)
        if validation:
            args += ["--test-labels", validation]
        patch = self.optional(parameters, self.PATCH, context)
        if patch is not None:
            args += ["--patch-size", patch]
        if epochs is not None and model in DEEP:
            args += ["--epochs", epochs]
        return args + ["--out", out, "--overwrite"]

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        out = self.parameterAsString(parameters, self.OUTPUT, context)
        args = self._args(parameters, context, feedback, out)
        self.run_geolesf(args, feedback, [out])
        results = {self.OUTPUT: out, self.CHECKPOINT: os.path.join(out, "model.pt"),
                   self.METRICS: os.path.join(out, "metrics.json")}
        cmap = os.path.join(out, "classmap.tif")
        if os.path.isfile(cmap):
            results[self.CLASS_MAP] = cmap
            if context.project() is not None:  # add it to the project, styled, as QGIS adds destinations
                context.addLayerToLoadOnCompletion(cmap, QgsProcessingContext.LayerDetails(
                    "Class map", context.project(), self.CLASS_MAP))
                style_on_load(context, cmap)
        return results
