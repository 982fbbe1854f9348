"""``geolesf predict``: classify a scene with a trained model and write a georeferenced map."""

from __future__ import annotations

import argparse

TILED_ONLY = ("tile", "overlap", "blend", "probabilities", "nodata", "resume")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="classify a scene with a trained model and write a class-map GeoTIFF (COG) + PNG preview",
        description="Classify every pixel of a scene with a trained model and write a class map with colour "
        "table, class names, provenance tags and the input's CRS/transform. GeoTIFF (any rasterio raster) "
        "scenes go through the tiled, streaming predictor: memory independent of the scene height, "
        "overlap blending, nodata respected, Cloud-Optimized GeoTIFF output with a QGIS .qml style, "
        "--resume after an interruption; dense (unet) and per-pixel patch (S²Mamba) checkpoints both "
        "work. MATLAB .mat and ENVI cubes (no georeferencing) are classified whole, in memory.",
    )
    p.add_argument("scene", help="input scene: GeoTIFF, or a cube PATH / PATH.mat:KEY / ENVI .hdr")
    p.add_argument("--model", default=None, help="model name; must match the checkpoint (default: the "
                   "checkpoint's own)")
    p.add_argument("--checkpoint", required=True,
                   help="model.pt written by 'geolesf train', or MODEL:TAG of a shipped checkpoint "
                   "(sha256-verified), e.g. s2mamba:indian_pines_dase")
    p.add_argument("--out", required=True, help="output class-map GeoTIFF (.tif)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="tiles per forward pass for dense models (default 16); pixels for patch models "
                   "(default 4096 tiled, 1024 whole-cube)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    p.add_argument("--no-preview", action="store_true", help="do not write the PNG preview")
    g = p.add_argument_group("tiled prediction (GeoTIFF scenes)")
    g.add_argument("--tile", type=int, default=None, help="tile side in pixels (default 512)")
    g.add_argument("--overlap", type=int, default=None, help="overlap between tiles in pixels (default 64)")
    g.add_argument("--blend", choices=("cosine", "linear", "none"), default=None,
                   help="overlap blending window (default cosine)")
    g.add_argument("--probabilities", default=None, metavar="PROBS.tif",
                   help="also write per-class probabilities (float32 COG)")
    g.add_argument("--probabilities-uint8", action="store_true",
                   help="write probabilities as uint8 scaled by 1/254 (nodata 255) instead of float32")
    g.add_argument("--nodata", type=float, default=None,
                   help="input nodata value, overriding the scene's own nodata/mask")
    g.add_argument("--resume", action="store_true", help="continue an interrupted run of the same command")
    m = p.add_argument_group("model-specific inputs")
    m.add_argument("--classes", default=None, metavar="NAME,NAME,...",
                   help="class names for open-vocabulary models (e.g. hclip): \"building,road,tree,water\"")
    m.add_argument("--prompts", default=None, metavar="VECTOR",
                   help="box/point prompts (GeoPackage, GeoJSON, shapefile) for promptable models (sam-*)")
    m.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="model-specific option passed to the checkpoint's loader (repeatable; VALUE is YAML)")
    p.set_defaults(func=run)


def _whole_cube(scene: str) -> bool:
    """``.mat`` (optionally ``:KEY``) and ENVI cubes go to the whole-cube path."""
    from geolesf.io.hsi import is_envi, split_spec

    path, key = split_spec(scene)
    return key is not None or path.suffix.lower() == ".mat" or is_envi(path)


def model_options(args: argparse.Namespace) -> dict:
    """``--classes``, ``--prompts`` and ``--option KEY=VALUE`` as one dict for the checkpoint's loader."""
    from geolesf.config import parse_options

    opts = parse_options(args.options)
    if args.classes is not None:
        names = [n.strip() for n in args.classes.split(",") if n.strip()]
        if not names:
            from geolesf.errors import ConfigError

            raise ConfigError("--classes: expected comma-separated class names")
        opts["classes"] = names
    if args.prompts is not None:
        opts["prompts"] = args.prompts
    return opts


def run(args: argparse.Namespace) -> int:
    from geolesf.errors import ConfigError
    from geolesf.tasks.registry import PREDICT_RUNNERS, checkpoint_format, resolve

    if PREDICT_RUNNERS:
        fmt = checkpoint_format(args.checkpoint)
        if fmt in PREDICT_RUNNERS:
            return int(resolve(PREDICT_RUNNERS[fmt])(args) or 0)
    options = model_options(args)

    if _whole_cube(args.scene):
        used = [f"--{n}" for n in TILED_ONLY if getattr(args, n) not in (None, False)]
        if used:
            raise ConfigError(f"{', '.join(used)}: only for GeoTIFF scenes; {args.scene} is classified whole")
        from geolesf.predict.hsi_scene import classify_cube

        result = classify_cube(
            args.scene, args.checkpoint, args.out, model_name=args.model, batch_size=args.batch_size or 1024,
            device=args.device, preview=not args.no_preview,
        )
        print(f"wrote {result.out} ({result.class_map.shape[1]}×{result.class_map.shape[0]} px, "
              f"{result.pixels_per_second:,.0f} px/s)")
        if result.preview:
            print(f"wrote {result.preview}")
        return 0

    from geolesf.predict.tiled import predict_file

    tiling = {k: getattr(args, k) for k in ("tile", "overlap", "blend") if getattr(args, k) is not None}
    tiled = predict_file(
        args.scene, args.checkpoint, args.out, model_name=args.model, batch_size=args.batch_size,
        device=args.device, probabilities=args.probabilities, nodata=args.nodata, resume=args.resume,
        probabilities_dtype="uint8" if args.probabilities_uint8 else "float32",
        preview=not args.no_preview, options=options, **tiling,
    )
    print(f"wrote {tiled.out} ({tiled.width}×{tiled.height} px, {tiled.tiles_run}/{tiled.tiles} tiles run, "
          f"{tiled.megapixels_per_second:.2f} Mpx/s)")
    for extra in (tiled.probabilities, tiled.out.with_suffix(".qml"), tiled.out.with_suffix(".png")):
        if extra is not None and extra.exists():
            print(f"wrote {extra}")
    return 0
