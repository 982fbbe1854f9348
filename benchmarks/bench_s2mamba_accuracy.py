"""Collect S²Mamba accuracy on Indian Pines from run folders into ``results/s2mamba_accuracy.json``.

Training S²Mamba for 400 epochs takes tens of minutes on 2 CPU cores, so the runs are made with
the CLI (commands below, also recorded in each run's ``config.yaml``) and this script gathers their
``metrics.json`` / ``summary.json`` with the split, leakage and epochs used:

    geolesf train --config s2mamba/indian_pines_random10 --out runs/bench/s2m_random10
    geolesf train --config s2mamba/indian_pines          --out runs/bench/s2m_fixed
    geolesf train --config s2mamba/indian_pines_dase --epochs 100 --out runs/bench/s2m_dase100
    geolesf train --config s2mamba/indian_pines_random10 --split disjoint --out runs/bench/s2m_disjoint
    python benchmarks/bench_s2mamba_accuracy.py runs/bench/s2m_*
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

RESULTS = Path(__file__).resolve().parent / "results" / "s2mamba_accuracy.json"


def collect(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    history = json.loads((run / "history.json").read_text()) if (run / "history.json").is_file() else []
    split = metrics["split"]
    return {
        "run": run.name,
        "split": split["name"],
        "train_pixels": split["train_pixels"],
        "test_pixels": split["test_pixels"],
        "OA": metrics["OA"],
        "AA": metrics["AA"],
        "kappa": metrics["kappa"],
        "macro_IoU": metrics["macro_IoU"],
        "leakage_fraction": split["leakage"]["fraction"],
        "epochs": cfg["trainer"]["epochs"],
        "seed": cfg["trainer"]["seed"],
        "fit_seconds": metrics["timings"]["fit_seconds"],
        "seconds_per_epoch": metrics["timings"]["fit_seconds"] / max(len(history), 1),
        "note": f"{cfg['trainer']['epochs']} epochs, seed {cfg['trainer']['seed']}, last-epoch model",
        "cube": metrics["data"]["cube"]["path"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    runs = [collect(r) for r in args.runs if (r / "metrics.json").is_file()]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"model": "s2mamba", "runs": runs}, indent=2) + "\n")
    for r in runs:
        print(f"{r['run']:>20}  {r['split']:>8}  OA {r['OA']:.4f}  AA {r['AA']:.4f}  κ {r['kappa']:.4f}  "
              f"leakage {r['leakage_fraction']:.1%}  ({r['note']})")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
