"""``geolesf evaluate``: metrics of a trained checkpoint on the test pixels of a split."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a trained checkpoint on the test pixels of a split",
        description="Recompute OA, AA, kappa, per-class metrics and the confusion matrix of a trained "
        "patch-model checkpoint (model.pt from 'geolesf train'). The split is rebuilt from the run's "
        "config.yaml beside the checkpoint (same seed, same pixels) unless --config or data options are "
        "given; the cube is normalised with the statistics stored in the checkpoint. Writes "
        "evaluation.json beside the checkpoint (or --out).",
    )
    p.add_argument("--checkpoint", required=True,
                   help="model.pt written by 'geolesf train', or MODEL:TAG of a shipped checkpoint "
                   "(sha256-verified), e.g. s2mamba:indian_pines_dase")
    p.add_argument("--config", help="run config (default: config.yaml beside the checkpoint)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set data.split=dase (repeatable)")
    p.add_argument("--cube", help="cube to evaluate on (PATH or PATH.mat:KEY)")
    p.add_argument("--labels", help="ground truth for --cube")
    p.add_argument("--split", help="random | count | fixed | dase | disjoint")
    p.add_argument("--out", help="where to write the metrics JSON (default evaluation.json beside the checkpoint)")
    p.add_argument("--batch-size", type=int, default=1024, help="pixels per forward pass (default 1024)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geolesf.tasks.hsi_evaluate import evaluate_checkpoint

    base = {k: v for k, v in (("data.cube", args.cube), ("data.labels", args.labels),
                               ("data.split", args.split)) if v}
    m = evaluate_checkpoint(args.checkpoint, args.config, args.overrides, base=base, out=args.out,
                            batch_size=args.batch_size, device=args.device)
    print(f"OA {m['OA']:.4f}  AA {m['AA']:.4f}  kappa {m['kappa']:.4f}  macro IoU {m['macro_IoU']:.4f}  "
          f"({m['split']['name']} split, {m['split']['test_pixels']} test px)")
    print(f"wrote {m['written_to']}")
    return 0
