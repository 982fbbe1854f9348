"""Spatial block cross-validation of an HSI run (``data.cv_blocks: K``, ``geolesf train --cv-blocks K``).

One sub-run per fold into ``OUT/fold_<f>/`` (its ``config.yaml`` sets ``data.cv_fold: f``, so it re-runs
that fold alone; the folds are :func:`geolesf.data.block_cv.block_cv_split`), then ``OUT/summary.json``:
mean ± sample standard deviation (ddof=1) of OA / AA / kappa / macro IoU over the folds, and per fold its
train/test pixel counts and the leakage report (test pixels whose patch holds a training pixel; 0 with
the default buffer of the patch radius). Mirrors the ``trainer.seeds`` summary of ``run_hsi``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.errors import ConfigError
from geolesf.io.atomic import write_json, write_yaml

METRICS = ("OA", "AA", "kappa", "macro_IoU")


def fold_summary(cfg: Any, results: list[dict[str, Any]]) -> dict[str, Any]:
    """``summary.json`` content from the folds' metrics dicts (in fold order)."""
    k = int(cfg.data.cv_blocks)
    first = results[0]["split"]["params"]
    summary: dict[str, Any] = {
        "cv_blocks": k, "model": cfg.model.name, "split": "blocks", "block_size": first["block_size"],
        "buffer": first["buffer"], "std": "sample standard deviation (ddof=1) over the folds",
        "folds": [],
    }
    for f, r in enumerate(results):
        split = r["split"]
        summary["folds"].append({
            "fold": f, "OA": r["OA"], "AA": r["AA"], "kappa": r["kappa"],
            "train_pixels": split["train_pixels"], "test_pixels": split["test_pixels"],
            "train_pixels_dropped_by_buffer": split["params"]["train_pixels_dropped_by_buffer"],
            "leakage": split["leakage"],
        })
    for key in METRICS:
        vals = np.array([r[key] for r in results], dtype=np.float64)
        summary[key] = {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)), "values": vals.tolist()}
    summary["max_leakage_fraction"] = max(f["leakage"]["fraction"] for f in summary["folds"])
    return summary


def run_block_cv(cfg: Any, run_single: Callable[[Any, Path], dict[str, Any]]) -> Path:
    """Run every fold of ``cfg.data.cv_blocks`` with ``run_single(sub_cfg, folder)``; returns the run folder."""
    k = int(cfg.data.cv_blocks)
    if k < 2:
        raise ConfigError(f"data.cv_blocks must be at least 2 folds, found {k}")
    if cfg.trainer.seeds:
        raise ConfigError("data.cv_blocks and trainer.seeds exclude each other: cross-validate with one seed")
    if cfg.data.test_labels:
        raise ConfigError("data.cv_blocks and data.test_labels exclude each other: cross-validation draws its "
                          "test pixels from data.labels")
    out = Path(cfg.out)
    results = []
    for f in range(k):
        sub = copy.deepcopy(cfg)
        sub.data.cv_fold = f
        sub.out = str(out / f"fold_{f}")
        print(f"[{cfg.model.name}] block cross-validation: fold {f + 1}/{k}")
        results.append(run_single(sub, Path(sub.out)))
    summary = fold_summary(cfg, results)
    write_yaml(out / "config.yaml", cfg)
    write_json(out / "summary.json", summary)
    leaks = ", ".join(f"{f['leakage']['fraction']:.1%}" for f in summary["folds"])
    print(f"[{cfg.model.name}] {k}-fold block CV: OA {summary['OA']['mean']:.4f} ± {summary['OA']['std']:.4f}  "
          f"AA {summary['AA']['mean']:.4f} ± {summary['AA']['std']:.4f}  "
          f"kappa {summary['kappa']['mean']:.4f} ± {summary['kappa']['std']:.4f}; leakage per fold {leaks} → {out}")
    return out
