"""The QGIS plugin's sources (``geolesf_qgis/``), shipped in the wheel, and the zip builder.

``geolesf_qgis`` is a QGIS plugin package: it runs inside QGIS's own Python (which has no torch) and
imports only ``qgis`` and ``processing``; geolesf never imports it. :func:`build_zip` packs it with its
``metadata.txt`` into the zip that QGIS's "Install from ZIP" accepts (``geolesf qgis-plugin``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from geolesf import __version__
from geolesf.io.atomic import atomic_path

PLUGIN = "geolesf_qgis"
SOURCE = Path(__file__).resolve().parent / PLUGIN

METADATA = """\
[general]
name=geolesf
qgisMinimumVersion=3.22
description=Remote-sensing machine learning from the Processing Toolbox: classify a raster with a geolesf checkpoint, train from polygons, export class maps to styled GeoPackages, write pseudo-labels.
version={version}
author=geolesf developers
about=A Processing provider that runs the geolesf command line (installed separately: pip install geolesf) as an external program. Set its path under Settings > Options > Processing > Providers > geolesf. Results open styled (class names and colours), progress and cancel follow the Processing dialog.
tracker=https://github.com/geolesf/geolesf/issues
repository=https://github.com/geolesf/geolesf
homepage=https://github.com/geolesf/geolesf/blob/main/docs/qgis_plugin.md
hasProcessingProvider=yes
tags=processing,machine learning,deep learning,classification,hyperspectral,segmentation,remote sensing
category=Analysis
experimental=False
deprecated=False
"""


def plugin_files() -> list[Path]:
    """The plugin's source files (``*.py``), sorted."""
    return sorted(p for p in SOURCE.glob("*.py") if p.is_file())


def build_zip(out: str | Path) -> Path:
    """Write the plugin zip (``geolesf_qgis/…`` + ``metadata.txt`` for this geolesf version) atomically."""
    out = Path(out)
    with atomic_path(out, suffix=".zip") as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in plugin_files():
            zf.write(path, f"{PLUGIN}/{path.name}")
        zf.writestr(f"{PLUGIN}/metadata.txt", METADATA.format(version=__version__))
    return out
