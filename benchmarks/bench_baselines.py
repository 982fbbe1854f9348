"""RF and SVM baselines on the real Indian Pines scene: random 10 %, fixed SpectralFormer maps, DASE, block-disjoint.

    python benchmarks/bench_baselines.py [--out benchmarks/results/baselines.json]

Uses the embedded cube (geolesf/embedded/indian_pines, the 8-bit SSGA copy) unless
GEOLESF_DATA holds indian_pines/. For every (model, split) the full geolesf run is executed
(split → normalisation fitted on training pixels → fit → whole-scene prediction → metrics) and
OA / AA / kappa, the 7×7 leakage fraction and the fit time are recorded with the machine.
The block-disjoint split uses 10 px blocks, 10 % of each class, a 3 px buffer (7×7 patches).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def data_root() -> Path:
    extra = os.environ.get("GEOLESF_DATA")
    if extra and (Path(extra) / "indian_pines" / "IP_200_M.mat").is_file():
        return Path(extra) / "indian_pines"
    return REPO / "geolesf" / "embedded" / "indian_pines"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "baselines.json"))
    parser.add_argument("--trees", type=int, default=200)
    args = parser.parse_args(argv)

    from geolesf.config import DataConfig, ModelConfig, TrainConfig, TrainerConfig
    from geolesf.methods.hsi.train import machine_info, run_single

    from geolesf.data.splits import SPECTRALFORMER_INDIAN_PINES_REMAP

    root = data_root()
    models = [("rf", {"n_estimators": args.trees}), ("svm", {"C": 100.0, "gamma": "scale"})]
    splits = ["random", "dase", "disjoint"]
    fixed = Path(os.environ.get("GEOLESF_DATA", "/nonexistent")) / "indian_pines_fixed_split"
    if fixed.is_dir():  # the SpectralFormer maps (GPL-3.0) are only read from the shared data folder
        splits.insert(1, "fixed")
    cases = [(n, a, split) for n, a in models for split in splits]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, margs, split in cases:
            cfg = TrainConfig(
                out=str(Path(tmp) / f"{name}_{split}"),
                model=ModelConfig(name=name, args=margs),
                data=DataConfig(cube=str(root / "IP_200_M.mat"), labels=str(root / "Indian_pines_gt.mat"),
                                split=split, train_fraction=0.1, patch_size=7, normalize="train",
                                block_size=10, remap=SPECTRALFORMER_INDIAN_PINES_REMAP if split == "fixed" else None,
                                train_map=str(fixed / "IndianTR123_temp123.tif") if split == "fixed" else None,
                                test_map=str(fixed / "IndianTE123_temp123.tif") if split == "fixed" else None),
                trainer=TrainerConfig(seed=0),
            )
            t0 = time.perf_counter()
            m = run_single(cfg, Path(cfg.out))
            results.append({
                "model": name, "args": margs, "split": split,
                "split_params": {k: v for k, v in m["split"]["params"].items() if k != "remap"},
                "train_pixels": m["split"]["train_pixels"], "test_pixels": m["split"]["test_pixels"],
                "OA": round(m["OA"], 4), "AA": round(m["AA"], 4), "kappa": round(m["kappa"], 4),
                "macro_IoU": round(m["macro_IoU"], 4),
                "leakage_fraction_7x7": round(m["split"]["leakage"]["fraction"], 4),
                "fit_seconds": round(m["timings"]["fit_seconds"], 2),
                "predict_seconds": round(m["timings"]["predict_seconds"], 2),
                "total_seconds": round(time.perf_counter() - t0, 2),
            })
    report = {
        "benchmark": "per-pixel baselines on Indian Pines",
        "cube": f"{root / 'IP_200_M.mat'} (SSGA copy, each band min-max rescaled to 0..255, uint8)",
        "seed": 0,
        "machine": machine_info(),
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp_out, out)
    print(f"\n{'model':5} {'split':7} {'train':>6} {'test':>6} {'OA':>7} {'AA':>7} {'kappa':>7} {'leak7':>6} {'fit s':>6}")
    for r in results:
        print(f"{r['model']:5} {r['split']:7} {r['train_pixels']:6d} {r['test_pixels']:6d} {r['OA']:7.4f} "
              f"{r['AA']:7.4f} {r['kappa']:7.4f} {r['leakage_fraction_7x7']:6.3f} {r['fit_seconds']:6.2f}")
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
