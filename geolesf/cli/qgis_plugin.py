"""``geolesf qgis-plugin``: build the QGIS plugin zip (Processing provider "geolesf")."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Write the geolesf QGIS plugin as a zip that QGIS installs with Plugins → Manage and Install Plugins →
Install from ZIP. The plugin adds a "geolesf" provider to the Processing Toolbox (classify a raster with
a checkpoint, train from polygons, export a class map to a styled GeoPackage, write pseudo-labels); it
runs this geolesf installation as an external program, so set the path of the geolesf executable in
QGIS under Settings → Options → Processing → Providers → geolesf (empty: 'geolesf' on QGIS's PATH).
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "qgis-plugin", aliases=["qgis_plugin"], help="build the QGIS plugin zip (Processing provider)",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  geolesf qgis-plugin --out geolesf_qgis.zip",
    )
    p.add_argument("--out", required=True, help="output zip (.zip)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import shutil
    import sys
    from pathlib import Path

    from geolesf.errors import DataError
    from geolesf.io.atomic import check_outputs, output_folders
    from geolesf.qgis_plugin import build_zip

    out = Path(args.out)
    if out.suffix.lower() != ".zip":
        raise DataError(f"--out {out}: expected a .zip path")
    check_outputs({}, {"--out": out}, overwrite=args.overwrite)
    with output_folders(out):
        build_zip(out)
    print(f"wrote {out} (QGIS: Plugins → Manage and Install Plugins → Install from ZIP)")
    beside = Path(sys.executable).with_name("geolesf.exe" if sys.platform == "win32" else "geolesf")
    exe = str(beside) if beside.is_file() else shutil.which("geolesf") or "the geolesf executable"
    print(f"set 'geolesf executable' in QGIS (Settings → Options → Processing → Providers → geolesf) to {exe}")
    return 0
