"""The "geolesf" Processing provider: its algorithms and its one setting, the geolesf executable."""

from qgis.core import QgsApplication, QgsProcessingProvider

from processing.core.ProcessingConfig import ProcessingConfig, Setting

from .settings import EXECUTABLE


class GeolesfProvider(QgsProcessingProvider):
    def id(self):
        return "geolesf"

    def name(self):
        return "geolesf"

    def longName(self):  # noqa: N802 (QGIS's names)
        return "geolesf — remote-sensing machine learning"

    def icon(self):
        return QgsApplication.getThemeIcon("/processingAlgorithm.svg")

    def load(self):
        ProcessingConfig.settingIcons[self.name()] = self.icon()
        ProcessingConfig.addSetting(Setting(
            self.name(), EXECUTABLE, "geolesf executable (empty: 'geolesf' on PATH)", "",
            valuetype=Setting.FILE))
        ProcessingConfig.readSettings()
        self.refreshAlgorithms()
        return True

    def unload(self):
        ProcessingConfig.removeSetting(EXECUTABLE)

    def supportedOutputVectorLayerExtensions(self):  # noqa: N802
        return ["gpkg"]

    def defaultVectorFileExtension(self, hasGeometry=True):  # noqa: N802, N803
        return "gpkg"

    def supportedOutputRasterLayerExtensions(self):  # noqa: N802
        return ["tif"]

    def defaultRasterFileExtension(self):  # noqa: N802
        return "tif"

    def loadAlgorithms(self):  # noqa: N802
        from .algorithms import ClassifyAlgorithm, ExportAlgorithm, PseudoLabelAlgorithm
        from .training import TrainAlgorithm

        for alg in (ClassifyAlgorithm(), TrainAlgorithm(), ExportAlgorithm(), PseudoLabelAlgorithm()):
            self.addAlgorithm(alg)
