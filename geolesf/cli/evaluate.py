"""``geolesf evaluate``: metrics of a trained checkpoint.

Hyperspectral patch checkpoints are scored on the test pixels of their split; other checkpoint
formats (segmentation, open-vocabulary, weakly-supervised, detection) are handed to the evaluator
registered for their format in :mod:`geolesf.formats`, usually with ``--dataset``.
"""

from __future__ import annotations

import argparse

from geolesf.cli import argtypes


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a trained checkpoint (HSI split test pixels, or a benchmark --dataset)",
        description="Recompute OA, AA, kappa, per-class metrics and the confusion matrix of a trained "
        "patch-model checkpoint (model.pt from 'geolesf train'). The split is rebuilt from the run's "
        "config.yaml beside the checkpoint (same seed, same pixels) unless --config or data options are "
        "given; the cube is normalised with the statistics stored in the checkpoint. Writes "
        "evaluation.json beside the checkpoint (or --out). Segmentation, CLIP, weak-supervision and detection "
        "checkpoints are evaluated on a benchmark given by --dataset (and --data-root).",
    )
    p.add_argument("--checkpoint", required=True,
                   help="model.pt written by 'geolesf train', or MODEL:TAG of a shipped checkpoint "
                   "(sha256-verified), e.g. s2mamba:indian_pines_dase")
    p.add_argument("--config", help="run config (default: config.yaml beside the checkpoint)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set data.split=dase (repeatable)")
    p.add_argument("--cube", help="cube to evaluate on (PATH, PATH.mat:KEY or a catalog dataset name such as indian_pines)")
    p.add_argument("--labels", help="ground truth for --cube (a path or a catalog dataset name)")
    p.add_argument("--split", help="random | count | fixed | dase | disjoint")
    p.add_argument("--out", help="where to write the metrics JSON (default evaluation.json beside the checkpoint)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out JSON (never the checkpoint or another input)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="pixels (HSI, default 1024) or images per forward pass")
    b = p.add_argument_group("benchmark evaluation (non-HSI checkpoints)")
    b.add_argument("--dataset", help="benchmark name, e.g. ade20k, voc2012, voc2007, coco2017, pascal_context59")
    b.add_argument("--data-root", help="folder holding the dataset (default: $GEOLESF_DATA or the catalog path)")
    b.add_argument("--what", help="what to score, for methods with stages (e.g. seeds | pseudo | final)")
    b.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="evaluator-specific option (repeatable; VALUE is YAML)")
    p.add_argument("--device", type=argtypes.device, default="cpu", help="torch device (default cpu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geolesf import formats
    from geolesf.config import parse_options

    request = formats.EvaluateRequest(
        checkpoint=args.checkpoint, dataset=args.dataset, data_root=args.data_root, what=args.what, out=args.out,
        device=args.device, batch_size=args.batch_size, options=parse_options(args.options), config=args.config,
        overrides=tuple(args.overrides), cube=args.cube, labels=args.labels, split=args.split,
    )
    # --out: locked for the run, never an input, an existing file only with --overwrite (geolesf.io.atomic).
    # The default report beside the checkpoint is this command's own and is refreshed.
    from geolesf.io.atomic import check_outputs, output_folders, output_lock

    inputs = {"--checkpoint": args.checkpoint, "--config": args.config, "--cube": args.cube, "--labels": args.labels}
    # a missing folder of --out is created, and removed again (while empty) when the run fails
    with output_folders(args.out), output_lock(args.out):
        if args.out is not None:
            check_outputs(inputs, {"--out": args.out}, overwrite=args.overwrite)
        fmt = formats.checkpoint_format(args.checkpoint)
        m = formats.evaluator(fmt, args.checkpoint).evaluate(request)
    print(m.get("summary", ""))
    if m.get("written_to"):
        print(f"wrote {m['written_to']}")
    return 0
