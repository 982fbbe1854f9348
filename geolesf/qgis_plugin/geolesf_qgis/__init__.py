"""geolesf QGIS plugin: a Processing provider that runs the geolesf command line.

QGIS calls :func:`classFactory` when it loads the plugin; the plugin registers its Processing
provider in ``initProcessing()`` (``hasProcessingProvider=yes`` in ``metadata.txt``).
"""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    from .plugin import GeolesfPlugin

    return GeolesfPlugin(iface)
