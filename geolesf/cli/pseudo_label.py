"""``geolesf pseudo-label``: georeferenced pseudo-labels (seeds + ignore + confidence) of a scene."""

from __future__ import annotations

import argparse

from geolesf.cli import argtypes

DESCRIPTION = """\
Run a weakly supervised checkpoint (geolesf-wsss/1: CAM, USAGE or single-stage, from
'geolesf train' with task: wsss) over a scene with the tiled, streaming predictor and write a
two-band uint8 GeoTIFF with the scene's CRS and transform: band 1 = pseudo label (the dataset's
class ids; --ignore-value where the best-vs-second class score margin is below --margin or the
input has no data), band 2 = confidence (the margin × 254; 255 = no data).
Per tile, seeds use the classes the classifier finds present (--presence) or the fixed --tags.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pseudo-label", aliases=["pseudo_label"],
        help="write georeferenced pseudo-labels (seeds, ignore value, confidence band) from a WSSS checkpoint",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  geolesf pseudo-label scene.tif --checkpoint runs/cam/model.pt --out pseudo.tif --margin 0.1",
    )
    p.add_argument("scene", help="input scene (any RGB raster rasterio opens, uint8 values)")
    p.add_argument("--checkpoint", required=True, help="model.pt of a wsss run (geolesf-wsss/1)")
    p.add_argument("--out", required=True, help="output pseudo-label GeoTIFF (.tif)")
    p.add_argument("--margin", type=argtypes.unit_interval, default=None,
                   help="minimum best-vs-second score margin for a label (default: the checkpoint's, 0.1)")
    p.add_argument("--ignore-value", type=int, default=255, help="label of uncertain / no-data pixels (default 255)")
    p.add_argument("--stage", choices=("seeds", "final"), default="seeds",
                   help="seeds (CAM scores, any wsss checkpoint) or final (single-stage segmentation head)")
    p.add_argument("--tags", default=None, metavar="NAME,NAME,...",
                   help="classes known to be present in the whole scene (default: detected per tile)")
    p.add_argument("--presence", type=float, default=0.5,
                   help="classifier probability above which a class counts as present in a tile (default 0.5)")
    p.add_argument("--scales", default="1.0", help="comma-separated CAM scales (default 1.0)")
    p.add_argument("--no-flip", action="store_true", help="do not average with the flipped tile")
    p.add_argument("--tile", type=int, default=512, help="tile side in pixels (default 512; CAMs are normalised per tile)")
    p.add_argument("--overlap", type=int, default=None, help="tile overlap in pixels (default min(64, tile/4))")
    p.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass (default 4)")
    p.add_argument("--nodata", type=float, default=None, help="input nodata value, overriding the scene's own")
    p.add_argument("--device", type=argtypes.device, default="cpu", help="torch device (default cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out (never the input scene)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geolesf.errors import ConfigError
    from geolesf.methods.wsss.pseudo_label import write_pseudo_labels

    try:
        scales = tuple(float(s) for s in args.scales.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"--scales {args.scales!r}: expected comma-separated numbers") from None
    if not scales or any(s <= 0 for s in scales):
        raise ConfigError(f"--scales {args.scales!r}: expected positive numbers")
    from geolesf.io.atomic import output_folders

    # a missing folder of --out is created, and removed again (while empty) when the run fails
    with output_folders(args.out):
        res = write_pseudo_labels(
            args.scene, args.checkpoint, args.out, margin=args.margin, ignore_value=args.ignore_value,
            stage=args.stage, tags=args.tags, presence=args.presence, scales=scales, flip=not args.no_flip,
            tile=args.tile, overlap=args.overlap if args.overlap is not None else min(64, args.tile // 4),
            batch_size=args.batch_size, device=args.device, nodata=args.nodata, overwrite=args.overwrite,
        )
    print(f"wrote {res.out} ({res.width}×{res.height} px, {100 * res.labelled_fraction:.1f}% labelled, "
          f"{res.seconds:.1f} s)")
    return 0
