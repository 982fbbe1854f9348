"""``geolesf export``: turn a class map into GIS deliverables (GeoPackage polygons + QML styles)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a class map to a styled GeoPackage and QGIS .qml styles",
        description="Polygonise a geolesf class map into a GeoPackage in the scene's CRS with fields "
        "class_id, class_name and area_m2. The layer's QGIS style is stored in the GeoPackage "
        "(layer_styles), so QGIS opens it styled; .qml files are written beside the class map "
        "(paletted legend with the real class names) and beside the GeoPackage.",
    )
    p.add_argument("classmap", help="class-map GeoTIFF written by geolesf predict")
    p.add_argument("--gpkg", required=True, help="output GeoPackage path (.gpkg)")
    p.add_argument("--layer", default=None, help="layer name (default: the GeoPackage file name)")
    p.add_argument("--connectivity", type=int, choices=(4, 8), default=4,
                   help="pixel connectivity of polygons (default 4)")
    p.add_argument("--no-qml", action="store_true", help="do not write .qml sidecar files")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --gpkg and .qml files (never the class map)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import warnings

    from geolesf.export.vector import polygonize
    from geolesf.io.atomic import output_folders

    # a missing folder of --gpkg is created, and removed again (while empty) when the export fails
    with output_folders(args.gpkg), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = polygonize(args.classmap, args.gpkg, layer=args.layer, connectivity=args.connectivity,
                            qml=not args.no_qml, overwrite=args.overwrite)
    # geolesf's own warnings become one "note:" line each; the libraries' echoes of the same
    # missing-CRS fact (rasterio, pyogrio) are dropped.
    for w in caught:
        if w.filename.startswith(__file__.rsplit("/cli/", 1)[0]):
            print(f"note: {w.message}")
    print(f"wrote {result.gpkg} (layer '{result.layer}', {result.features:,} polygons, styled)")
    for path in (result.raster_qml, result.qml):
        if path is not None:
            print(f"wrote {path}")
    return 0
