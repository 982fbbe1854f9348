"""``geolesf predict``: classify a scene with a trained model and write a georeferenced map."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from geolesf.cli import argtypes

if TYPE_CHECKING:
    from pathlib import Path

    from geolesf.formats import PredictRequest

TILED_ONLY = ("tile", "overlap", "blend", "probabilities", "nodata", "resume", "memory_budget", "memory_format")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="classify a scene with a trained model and write a class-map GeoTIFF (COG) + PNG preview",
        description="Classify every pixel of a scene with a trained model and write a class map with colour "
        "table, class names, provenance tags and the input's CRS/transform. GeoTIFF (any rasterio raster) "
        "scenes go through the tiled, streaming predictor: memory independent of the scene height, "
        "overlap blending, nodata respected, Cloud-Optimized GeoTIFF output with a QGIS .qml style, "
        "--resume after an interruption; dense (unet) and per-pixel patch (S²Mamba) checkpoints both "
        "work. MATLAB .mat cubes, ENVI cubes (CRS from map info) and sensor products (EnMAP/DESIS L2A folder "
        "or metadata file, PRISMA L2D .he5, AVIRIS-NG/-3 L2) are classified whole, in memory.",
    )
    p.add_argument("scene", nargs="+", help="input scene: GeoTIFF, or a cube PATH / PATH.mat:KEY / ENVI .hdr / "
                   "sensor product, or a catalog dataset name (e.g. indian_pines); several GeoTIFFs "
                   "(e.g. scenes/*.tif) with --out-dir")
    p.add_argument("--model", default=None, help="model name; must match the checkpoint (default: the "
                   "checkpoint's own)")
    p.add_argument("--checkpoint", required=True,
                   help="model.pt written by 'geolesf train', or MODEL:TAG of a shipped checkpoint "
                   "(sha256-verified), e.g. s2mamba:indian_pines_dase")
    p.add_argument("--out", default=None, help="output class-map GeoTIFF (.tif) of a single scene (a missing "
                   "folder is created, and removed again if the run fails)")
    p.add_argument("--batch-size", type=argtypes.positive_int, default=None,
                   help="tiles per forward pass for dense models (default 16); pixels for patch models "
                   "(default 1024; 256 with --engine onnxruntime)")
    p.add_argument("--device", default="cpu", type=argtypes.device, help="torch device, e.g. cpu or cuda (default cpu)")
    p.add_argument("--engine", choices=("torch", "onnxruntime"), default="torch",
                   help="run the checkpoint with PyTorch (default) or a .onnx from 'geolesf export-model' with "
                   "onnxruntime (one scene, one process; a .onnx needs --engine onnxruntime)")
    p.add_argument("--no-preview", action="store_true", help="do not write the PNG preview")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs (class map, .qml, .png preview, .stac.json, probabilities); "
                   "an output is never allowed to be an input")
    p.add_argument("--stac", action="store_true",
                   help="also write a STAC Item beside each class map (<name>.stac.json): classes, projection, "
                   "provenance; validated offline with pystac")
    g = p.add_argument_group("tiled prediction (GeoTIFF scenes)")
    g.add_argument("--tile", type=argtypes.tile_size, default=None,
                   help="tile side in pixels, or 'auto': for dense models the side (and, without --batch-size, "
                   "the batch) with the least overlap waste that fits --memory-budget, printed (default 512)")
    g.add_argument("--memory-budget", type=argtypes.memory_size, default=None, metavar="SIZE",
                   help="memory for the tiles in flight with --tile auto, e.g. 2GiB or 512MiB (default a quarter "
                   "of the available memory, at most 1GiB)")
    g.add_argument("--memory-format", choices=("auto", "channels_last", "contiguous"), default=None,
                   help="layout of the dense batch input: auto (channels-last on CPU for convolutional models, "
                   "faster; equal up to float rounding), channels_last or contiguous (NCHW) (default auto)")
    g.add_argument("--overlap", type=argtypes.non_negative_int, default=None, help="overlap between tiles in pixels (default 64)")
    g.add_argument("--blend", choices=("cosine", "linear", "none"), default=None,
                   help="overlap blending window (default cosine)")
    g.add_argument("--probabilities", default=None, metavar="PROBS.tif",
                   help="also write per-class probabilities (float32 COG)")
    g.add_argument("--probabilities-uint8", action="store_true",
                   help="write probabilities as uint8 scaled by 1/254 (nodata 255) instead of float32")
    g.add_argument("--nodata", type=float, default=None,
                   help="input nodata value, overriding the scene's own nodata/mask")
    g.add_argument("--resume", action="store_true", help="continue an interrupted run of the same command")
    d = p.add_argument_group("many scenes on a dask cluster (GeoTIFF scenes)")
    d.add_argument("--out-dir", default=None, metavar="DIR",
                   help="write one class map per scene into DIR as <scene stem>.tif (needed for several scenes)")
    d.add_argument("--workers", type=argtypes.positive_int, default=None, metavar="N",
                   help="run on a local dask cluster of N single-threaded worker processes (default with "
                   "several scenes: one per CPU core); same bytes as one process")
    d.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run on an existing dask scheduler, e.g. tcp://dask-scheduler:8786 (workers must "
                   "read the scenes and checkpoint at the same paths)")
    d.add_argument("--part-rows", type=argtypes.positive_int, default=None, metavar="ROWS",
                   help="output rows per dask task, a multiple of 512 (default: about four tiles)")
    d.add_argument("--retries", type=argtypes.non_negative_int, default=3, help="retries of a failed dask task (default 3)")
    m = p.add_argument_group("model-specific inputs")
    m.add_argument("--classes", default=None, metavar="NAME,NAME,...",
                   help="class names for open-vocabulary models (e.g. hclip): \"building,road,tree,water\"")
    m.add_argument("--prompts", default=None, metavar="VECTOR",
                   help="box/point prompts (GeoPackage, GeoJSON, shapefile) for promptable models (sam-*)")
    m.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="model-specific option passed to the checkpoint's loader (repeatable; VALUE is YAML)")
    p.set_defaults(func=run)


def _whole_cube(scene: str) -> bool:
    """``.mat`` (optionally ``:KEY``), ENVI cubes and sensor products go to the whole-cube path."""
    from geolesf.io.envi import is_envi
    from geolesf.io.hsi import split_spec
    from geolesf.io.sensors import detect

    path, key = split_spec(scene)
    return key is not None or path.suffix.lower() == ".mat" or is_envi(path) or detect(path) is not None


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


def _distributed(args: argparse.Namespace) -> bool:
    """Several scenes, --out-dir, --workers or --scheduler: the dask path (geolesf.predict.distributed)."""
    scenes = args.scene if isinstance(args.scene, list) else [args.scene]
    return len(scenes) > 1 or any(getattr(args, k, None) is not None for k in ("out_dir", "workers", "scheduler"))


def run_distributed(args: argparse.Namespace) -> int:
    from geolesf.errors import ConfigError

    scenes = args.scene if isinstance(args.scene, list) else [args.scene]
    if args.out_dir is None and not (len(scenes) == 1 and args.out):
        raise ConfigError(f"{len(scenes)} scenes: give --out-dir DIR (one <scene stem>.tif each)")
    if args.out_dir is not None and args.out:
        raise ConfigError("--out and --out-dir exclude each other: give one")
    from geolesf.predict.onnx_engine import is_onnx_path

    if getattr(args, "engine", "torch") != "torch" or is_onnx_path(args.checkpoint):
        raise ConfigError("--engine onnxruntime (.onnx models): one GeoTIFF scene with --out, not several scenes "
                          "or a dask cluster")
    bad = [s for s in scenes if _whole_cube(s)]
    if bad:
        raise ConfigError(f"{bad[0]}: .mat/ENVI cubes and sensor products are classified whole; "
                          "--workers/--scheduler/--out-dir take GeoTIFF scenes")
    unsupported = [f"--{n.replace('_', '-')}" for n in ("probabilities", "resume", "prompts", "memory_budget")
                   if getattr(args, n, None) not in (None, False)]
    if args.tile == "auto":
        unsupported.insert(0, "--tile auto")
    if unsupported:
        raise ConfigError(f"{', '.join(unsupported)}: not available with several scenes or a dask cluster")
    from geolesf.predict.distributed import scene_outputs

    outs = scene_outputs(scenes, args.out_dir) if args.out_dir is not None else [args.out]
    from pathlib import Path

    written: dict[str, object] = {}
    for o in outs:
        written.update(_sidecars(args, Path(o), qml=True, preview=False,
                                 label="--out" if args.out_dir is None else "output"))
    from geolesf.io.atomic import output_folders

    with output_folders(*outs), _policy(args, scenes, written, outs):
        return _run_distributed(args, scenes, outs)


def _run_distributed(args: argparse.Namespace, scenes: list[str], outs: list) -> int:
    from geolesf.predict.distributed import predict_distributed

    keys = ("tile", "overlap", "blend", "nodata", "memory_format")
    kwargs = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    if args.batch_size is not None:
        kwargs["batch_size"] = kwargs["pixel_batch"] = args.batch_size
    results = predict_distributed(
        scenes, args.checkpoint, outs, workers=args.workers, scheduler=args.scheduler, part_rows=args.part_rows,
        retries=args.retries, device=args.device, model_name=args.model, options=model_options(args), **kwargs,
    )
    for r in results:
        print(f"wrote {r.out} ({r.width}×{r.height} px, {r.parts} parts on {len(r.workers)} worker(s))")
        _write_stac(args, r.out)
    return 0


def _sidecars(args: argparse.Namespace, out: Path, *, qml: bool, preview: bool,
              label: str = "--out") -> dict[str, object]:
    """``{label: path}`` of everything one class map ``out`` brings with it."""
    written: dict[str, object] = {label: out}
    if qml:
        written[f"style of {label}"] = out.with_suffix(".qml")
    if preview:
        written[f"preview of {label}"] = out.with_suffix(".png")
    if getattr(args, "stac", False):
        from geolesf.export.stac import stac_path

        written[f"STAC Item of {label}"] = stac_path(out)
    return written


def _inputs(args: argparse.Namespace, scenes: list[str]) -> dict[str, object]:
    ins: dict[str, object] = {("input scene" if len(scenes) == 1 else f"input scene {s}"): s for s in scenes}
    ins["--checkpoint"] = args.checkpoint
    if getattr(args, "prompts", None):
        ins["--prompts"] = args.prompts
    return ins


@contextmanager
def _policy(args: argparse.Namespace, scenes: list[str], written: dict[str, object], locked: list) -> Iterator[None]:
    """The output policy (geolesf.io.atomic): the destinations are locked against other geolesf runs for
    the whole run, no output is an input, and none is replaced without --overwrite."""
    from geolesf.io.atomic import check_outputs, output_lock

    with output_lock(*locked):
        check_outputs(_inputs(args, scenes), written, overwrite=bool(getattr(args, "overwrite", False)))
        yield


def _write_stac(args: argparse.Namespace, out: object, probabilities: object = None) -> None:
    """``--stac``: the STAC Item of class map ``out`` (geolesf.export.stac), validated before it is written."""
    if not getattr(args, "stac", False):
        return
    from geolesf.export.stac import write_stac_item

    print(f"wrote {write_stac_item(out, probabilities=probabilities)}")


def request(args: argparse.Namespace, scene: str) -> "PredictRequest":
    """The parsed flags of one scene as the typed request the predictors and methods take."""
    from geolesf.formats import PredictRequest

    return PredictRequest(
        scene=scene, checkpoint=args.checkpoint, out=args.out, model_name=args.model, options=model_options(args),
        tile=args.tile, overlap=args.overlap, blend=args.blend, batch_size=args.batch_size, device=args.device,
        memory_budget=getattr(args, "memory_budget", None), memory_format=getattr(args, "memory_format", None),
        probabilities=args.probabilities, probabilities_uint8=args.probabilities_uint8, nodata=args.nodata,
        resume=args.resume, preview=not args.no_preview, engine=getattr(args, "engine", "torch"),
    )


def run(args: argparse.Namespace) -> int:
    from geolesf.errors import ConfigError

    from geolesf.data.sources import resolve_source

    scenes = args.scene if isinstance(args.scene, list) else [args.scene]
    args.scene = [resolve_source(s, "scene", flag="scene") for s in scenes]  # dataset names → local files
    if _distributed(args):
        return run_distributed(args)
    scene = args.scene[0] if isinstance(args.scene, list) else args.scene
    if args.out is None:
        raise ConfigError("--out: give the output class-map path (.tif), or --out-dir for several scenes")
    from pathlib import Path

    out = Path(args.out)
    probs = Path(args.probabilities) if args.probabilities else None
    written = _sidecars(args, out, qml=True, preview=not args.no_preview)  # both paths write the .qml
    if probs is not None:
        written["--probabilities"] = probs
        written["style of --probabilities"] = probs.with_suffix(".qml")
    from geolesf.io.atomic import output_folders

    with output_folders(out, probs), _policy(args, [scene], written, [out, probs]):
        return _run_one(args, scene)


def _run_one(args: argparse.Namespace, scene: str) -> int:
    from geolesf import formats
    from geolesf.errors import ConfigError

    req = request(args, scene)
    from geolesf.predict.onnx_engine import check_engine, is_onnx_path

    if req.engine != "torch" or is_onnx_path(req.checkpoint):
        check_engine(req.engine, req.checkpoint)
        if req.options:
            raise ConfigError(f"--option/--classes/--prompts ({', '.join(sorted(req.options))}): an exported .onnx "
                              "takes none; its options were fixed by 'geolesf export-model --option'")
        return _run_whole_cube(args, req, scene) if _whole_cube(scene) else _run_tiled(args, req)
    method = formats.inference(formats.checkpoint_format(req.checkpoint), req.checkpoint)
    if hasattr(method, "run"):
        code = int(method.run(req) or 0)
        if code == 0 and getattr(args, "stac", False):
            from pathlib import Path

            if Path(req.out).suffix.lower() in (".tif", ".tiff") and Path(req.out).is_file():
                _write_stac(args, req.out)
            else:
                import sys

                print(f"--stac: skipped, {req.out} is not a class-map GeoTIFF", file=sys.stderr)
        return code

    if _whole_cube(scene):
        return _run_whole_cube(args, req, scene)
    return _run_tiled(args, req)


def _run_whole_cube(args: argparse.Namespace, req: "PredictRequest", scene: str) -> int:
    from geolesf.errors import ConfigError

    used = [f"--{n}" for n in TILED_ONLY if getattr(args, n) not in (None, False)]
    if used:
        raise ConfigError(f"{', '.join(used)}: only for GeoTIFF scenes; {scene} is classified whole")
    from geolesf.methods.hsi.inference import classify_cube

    bundle, batch = None, req.batch_size or 1024
    if req.engine == "onnxruntime":  # an exported per-pixel model (S²Mamba) in the same whole-cube path
        from geolesf.predict.onnx_engine import PatchBundle, load_onnx_model

        bundle, batch = PatchBundle(load_onnx_model(req.checkpoint, req.model_name, req.device)), req.batch_size or 256
    result = classify_cube(
        scene, req.checkpoint, req.out, model_name=req.model_name, batch_size=batch,
        device=req.device, preview=req.preview, bundle=bundle,
    )
    print(f"wrote {result.out} ({result.class_map.shape[1]}×{result.class_map.shape[0]} px, "
          f"{result.pixels_per_second:,.0f} px/s)")
    if result.preview:
        print(f"wrote {result.preview}")
    _write_stac(args, result.out)
    return 0


def _run_tiled(args: argparse.Namespace, req: "PredictRequest") -> int:
    from geolesf.predict.tiled import predict_request

    tiled = predict_request(req)
    print(f"wrote {tiled.out} ({tiled.width}×{tiled.height} px, {tiled.tiles_run}/{tiled.tiles} tiles run, "
          f"{tiled.megapixels_per_second:.2f} Mpx/s)")
    probs_qml = tiled.probabilities.with_suffix(".qml") if tiled.probabilities is not None else None
    for extra in (tiled.probabilities, probs_qml, tiled.out.with_suffix(".qml"), tiled.out.with_suffix(".png")):
        if extra is not None and extra.exists():
            print(f"wrote {extra}")
    _write_stac(args, tiled.out, tiled.probabilities)
    return 0
