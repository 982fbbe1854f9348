"""``geolesf export-model``: a checkpoint as an ONNX model with Deepness (QGIS) and geolesf metadata."""

from __future__ import annotations

import argparse

from geolesf.cli import argtypes

DESCRIPTION = """\
Export a dense segmenter (unet: compact or smp encoder; single-stage wsss with --option stage=final) or a
per-pixel patch classifier (S²Mamba) to ONNX. The graph takes the normalised model input and outputs
class probabilities (softmax). Dense models carry the metadata of the QGIS plugin Deepness (model_type
Segmentor, class_names, resolution, tiles_size, tiles_overlap, standardization_mean/std reproducing
geolesf's band normalisation from Deepness's 0-255 input, seg_thresh, seg_small_segment); every export
carries geolesf's own keys, so 'geolesf predict SCENE --checkpoint MODEL.onnx --engine onnxruntime' runs
it. onnxruntime is checked against PyTorch (max |difference| of the probabilities <= 1e-4) before the
file is written. Needs pip install 'geolesf[onnx]'.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-model", aliases=["export_model"],
        help="export a checkpoint to ONNX (Deepness/QGIS metadata; runs with --engine onnxruntime)",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  geolesf export-model runs/unet/model.pt --onnx unet.onnx --resolution 50",
    )
    p.add_argument("checkpoint", help="model.pt written by 'geolesf train', or MODEL:TAG of a shipped checkpoint")
    p.add_argument("--onnx", required=True, metavar="MODEL.onnx", help="output ONNX file (.onnx)")
    p.add_argument("--model", default=None, help="model name; must match the checkpoint (default: the checkpoint's own)")
    p.add_argument("--resolution", type=argtypes.positive_float, default=None, metavar="CM_PER_PX",
                   help="Deepness 'resolution' in centimetres per pixel (default: the training scene's pixel "
                   "size when the checkpoint records it, else not written)")
    p.add_argument("--tile", type=argtypes.positive_int, default=512,
                   help="Deepness tile size in pixels (tiles_size; default 512)")
    p.add_argument("--overlap", type=argtypes.non_negative_int, default=64,
                   help="tile overlap in pixels, written as Deepness tiles_overlap in percent of the tile (default 64)")
    p.add_argument("--seg-thresh", type=argtypes.unit_interval, default=0.0,
                   help="Deepness seg_thresh: minimum class probability (default 0 = plain argmax, as geolesf)")
    p.add_argument("--seg-small-segment", type=argtypes.non_negative_int, default=0,
                   help="Deepness seg_small_segment: remove segments up to this size (default 0 = keep all)")
    p.add_argument("--opset", type=argtypes.positive_int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="model-specific option passed to the checkpoint's loader, e.g. stage=final (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --onnx file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geolesf.config import parse_options
    from geolesf.export.onnx import export_onnx
    from geolesf.io.atomic import output_folders

    with output_folders(args.onnx):  # a missing folder is created, and removed again if the export fails
        res = export_onnx(
            args.checkpoint, args.onnx, model_name=args.model, options=parse_options(args.options),
            resolution_cm=args.resolution, tile=args.tile, overlap=args.overlap, seg_thresh=args.seg_thresh,
            seg_small_segment=args.seg_small_segment, opset=args.opset, overwrite=args.overwrite,
        )
    print(f"wrote {res.out} ({res.kind} model, {res.nodes:,} nodes, {res.bytes / 1e6:.1f} MB; onnxruntime vs "
          f"PyTorch max |Δp| = {res.max_abs_diff:.1e})")
    if res.kind == "dense":
        where = (f"{res.metadata['resolution']:g} cm/px from {res.resolution_from}" if "resolution" in res.metadata
                 else "not recorded, give --resolution")
        print(f"Deepness: Segmentor, {len(res.metadata['class_names'])} classes, resolution {where}")
    else:
        print("per-pixel patch model: runs with 'geolesf predict --engine onnxruntime' (Deepness has no "
              "patch-classifier model type)")
    return 0
