"""``geolesf train``: train a model into a run folder.

The config's top-level ``task:`` picks the task module (``hsi`` by default; see
:mod:`geolesf.formats`): hyperspectral classifiers, dense segmenters, SAM/CLIP
fine-tuning, weak supervision.

Only argparse is imported at module level; the library (numpy, scikit-learn, torch) loads inside
:func:`run`, so ``geolesf --help`` stays instant.
"""

from __future__ import annotations

import argparse

from geolesf.cli import argtypes

DESCRIPTION = """\
Train a model into a run folder. The config's top-level 'task:' key chooses what is trained:
hsi (default: per-pixel hyperspectral classifiers rf, svm, s2mamba), segmentation (a dense
segmenter such as unet on a GeoTIFF + label raster), sam-peft, hclip, wsss, wsod.

For the hsi task: train a per-pixel hyperspectral classifier and evaluate it on the test pixels
of a split.
The run folder (--out) receives metrics.json (OA, AA, kappa, per-class accuracy / precision /
recall / F1 / IoU, confusion matrix, macro IoU, the split with per-class counts and its
leakage report, the cube used), config.yaml (re-run with --config), classmap.tif (whole scene,
original class ids, colour table) and preview.png. With --seeds, one sub-folder per seed and
summary.json (mean ± std).

Settings come from --config YAML, then the shortcut flags, then --set KEY=VALUE overrides.
"""

EPILOG = """\
examples:
  geolesf train --model rf --cube indian_pines --labels indian_pines \\
      --split random --train-fraction 0.1 --seed 0 --out runs/ip_rf
  geolesf train --model svm --cube cube.tif --labels gt.tif --split disjoint --out runs/x
  geolesf train --config baselines/indian_pines_rf --set data.split=dase
  geolesf train --config baselines/indian_pines_rf --seeds 0,1,2,3,4
  geolesf train --config segmentation/unet_spacenet_buildings --set trainer.epochs=5
  geolesf train --list-configs

splits: random (fraction per class), count (--per-class N, at most 50%% of a class),
fixed (--train-map [--test-map]), dase (IEEE GRSS DASE Indian Pines mask), disjoint
(whole blocks, buffer of patch_size//2 px so no test patch sees a training pixel).
A .mat source may name its array as PATH:KEY. --cube/--labels/--train-map/--test-map also take a
catalog dataset name (e.g. indian_pines: its cube, its ground truth; see `geolesf data path`).
"""

# flag destination → dotted config key
FLAG_KEYS = {
    "model": "model.name",
    "cube": "data.cube",
    "labels": "data.labels",
    "split": "data.split",
    "train_fraction": "data.train_fraction",
    "per_class": "data.per_class",
    "train_map": "data.train_map",
    "test_map": "data.test_map",
    "patch_size": "data.patch_size",
    "seed": "trainer.seed",
    "seeds": "trainer.seeds",
    "epochs": "trainer.epochs",
    "lr": "trainer.lr",
    "batch_size": "trainer.batch_size",
    "out": "out",
    "label_field": "data.label_field",
    "all_touched": "data.all_touched",
    "test_labels": "data.test_labels",
    "cv_blocks": "data.cv_blocks",
    "drop_bands": "data.drop_bands",
    "scene_map": "trainer.scene_map",
}


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, found {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("expected at least one seed")
    return seeds


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train a model (hsi classifiers, segmenters, SAM/CLIP PEFT, weak supervision) into a run folder",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="YAML|NAME", help="run configuration: a YAML file, or the name of a config "
                   "shipped with geolesf, e.g. s2mamba/indian_pines (see --list-configs)")
    p.add_argument("--list-configs", action="store_true", help="list the shipped configs (names for --config) and exit")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set data.split=dase (repeatable; VALUE is YAML)")
    g = p.add_argument_group("shortcuts (each sets one config key)")
    g.add_argument("--model", help="registered model name: rf, svm, s2mamba, ... [model.name]")
    g.add_argument("--cube", metavar="PATH[:KEY]|NAME", help="cube: .mat, ENVI .hdr, GeoTIFF, or a catalog dataset name such as indian_pines [data.cube]")
    g.add_argument("--labels", metavar="PATH[:KEY]|NAME", help="ground truth, 0 = unlabelled, or a catalog dataset name [data.labels]")
    g.add_argument("--split", choices=("random", "count", "fixed", "dase", "disjoint"), help="split protocol [data.split]")
    g.add_argument("--train-fraction", type=argtypes.fraction, metavar="F", help="fraction of each class for training [data.train_fraction]")
    g.add_argument("--per-class", type=argtypes.positive_int, metavar="N", help="training pixels per class, count split [data.per_class]")
    g.add_argument("--train-map", metavar="PATH", help="fixed split training map, or DASE mask [data.train_map]")
    g.add_argument("--test-map", metavar="PATH", help="fixed split test map [data.test_map]")
    g.add_argument("--patch-size", type=argtypes.positive_int, metavar="P", help="odd patch side; also sets the leakage report and disjoint buffer [data.patch_size]")
    g.add_argument("--seed", type=int, help="split and model seed [trainer.seed]")
    g.add_argument("--seeds", type=_seed_list, metavar="S,S,...", help="several seeds, one run each, mean ± std [trainer.seeds]")
    g.add_argument("--epochs", type=argtypes.positive_int, help="deep models: epochs [trainer.epochs]")
    g.add_argument("--lr", type=argtypes.positive_float, help="deep models: learning rate [trainer.lr]")
    g.add_argument("--batch-size", type=argtypes.positive_int, help="deep models: batch size [trainer.batch_size]")
    g.add_argument("--out", metavar="DIR", help="run folder [out]")
    g.add_argument("--label-field", metavar="NAME", help="vector labels: attribute holding the class id or name [data.label_field]")
    g.add_argument("--all-touched", action="store_true", default=None, help="vector labels: burn every pixel a polygon touches [data.all_touched]")
    g.add_argument("--test-labels", metavar="PATH", help="separate validation labels, raster or vector [data.test_labels]")
    g.add_argument("--cv-blocks", type=argtypes.positive_int, metavar="K", help="spatial block cross-validation with K folds [data.cv_blocks]")
    g.add_argument("--drop-bands", type=argtypes.band_ranges, metavar="SPEC", help="'water' and/or wavelength ranges in nm, e.g. water,350-400 [data.drop_bands]")
    g.add_argument("--no-scene-map", dest="scene_map", action="store_false", default=None, help="skip classifying the whole scene after training [trainer.scene_map]")
    p.add_argument("--overwrite", action="store_true",
                   help="train into a run folder that already holds files (default: it must be empty or new, "
                   "unless trainer.resume continues a checkpoint)")
    p.set_defaults(func=run)
    return p


def build_config(args: argparse.Namespace) -> tuple[object, object]:
    """``(task module, config)`` for the parsed arguments."""
    from geolesf.config import load_config, peek_task
    from geolesf.errors import ConfigError
    from geolesf.formats import task_module

    task = peek_task(args.config, args.overrides)
    base = {key: getattr(args, dest) for dest, key in FLAG_KEYS.items() if getattr(args, dest, None) is not None}
    if task != "hsi":
        hsi_only = [f"--{d.replace('_', '-')}" for d, k in FLAG_KEYS.items()
                    if (k.startswith("data.") or d == "seeds") and getattr(args, d, None) is not None]
        if hsi_only:
            raise ConfigError(f"{', '.join(hsi_only)}: only for the hsi task; this config's task is '{task}' "
                              "(use --set KEY=VALUE)")
    module = task_module(task)
    return module, load_config(module.CONFIG, args.config, args.overrides, base=base)


def run(args: argparse.Namespace) -> int:
    from geolesf.io.atomic import check_run_folder, output_folders, output_lock

    if getattr(args, "list_configs", False):
        from geolesf.paths import configs_root, packaged_configs

        print(f"# shipped configs (in {configs_root()}); use as --config NAME")
        print("\n".join(packaged_configs()))
        return 0
    module, cfg = build_config(args)
    out = getattr(cfg, "out", None)
    resume = getattr(getattr(cfg, "trainer", None), "resume", None)
    if not out or _launched_rank():
        # A process that Lightning's DDP launcher started for rank > 0 reruns this command: the
        # rank-0 process holds the run folder's lock and has checked it already.
        module.run_config(cfg)
        return 0
    # One run per folder at a time; an existing folder with files only with --overwrite or a resume.
    # A run folder this command creates is removed again, while empty, when the run fails (as predict does).
    from pathlib import Path

    with output_folders(Path(out) / "config.yaml"), output_lock(out):
        check_run_folder(out, overwrite=getattr(args, "overwrite", False), resume=bool(resume))
        module.run_config(cfg)
    return 0


def _launched_rank() -> bool:
    """Whether this process is a non-zero rank started by a distributed launcher (Lightning, torchrun)."""
    import os

    return any(os.environ.get(k, "0") not in ("", "0") for k in ("LOCAL_RANK", "NODE_RANK", "RANK"))
