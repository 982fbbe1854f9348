"""The provider's setting: the geolesf executable (Settings → Options → Processing → Providers → geolesf)."""

from processing.core.ProcessingConfig import ProcessingConfig

EXECUTABLE = "GEOLESF_EXECUTABLE"


def executable_setting() -> str:
    """The configured geolesf executable (empty: ``geolesf`` on PATH)."""
    return ProcessingConfig.getSetting(EXECUTABLE) or ""
