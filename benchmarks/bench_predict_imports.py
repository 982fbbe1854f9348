"""Import cost of the ``geolesf predict`` path, beyond ``import torch``.

In fresh interpreters: ``import torch`` alone (baseline), then everything ``geolesf predict`` imports
before its first tile (CLI parser, predictor, rasterio, tqdm, the checkpoint's method, the model
rebuilt from the checkpoint) for an S²Mamba and a unet checkpoint. Reports the medians and whether Lightning was
imported (it must not be: inference never imports training code). Goal: ≤ 1.5 s beyond torch.

    python benchmarks/bench_predict_imports.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "predict_imports.json"

PROBE = r"""
import sys, time, json
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
from geolesf.cli.main import build_parser
build_parser()
import geolesf.predict.tiled
import rasterio  # the predictor opens the scene with it
from tqdm.auto import tqdm  # progress bar
from geolesf.predict.model import load_predict_model
load_predict_model(sys.argv[1])
t2 = time.perf_counter()
print(json.dumps({"torch_s": t1 - t0, "predict_path_s": t2 - t1, "lightning": "lightning" in sys.modules}))
"""


def _unet_checkpoint(path: Path) -> Path:
    import torch

    from geolesf.methods.unet.checkpoint import SegmentationCheckpoint, save
    from geolesf.methods.unet.model import unet

    torch.manual_seed(0)
    args = dict(in_chans=3, num_classes=4, base=4, depth=2)
    save(path, SegmentationCheckpoint(model=unet(**args).eval(), model_name="unet", model_args=args, band_mean=None,
                                      band_std=None, class_ids=[1, 2, 3, 4], class_names=list("abcd"), colors=[]))
    return path


def probe(checkpoint: str, repeats: int) -> dict:
    runs = []
    for _ in range(repeats + 1):  # the first run warms the page cache and is dropped
        out = subprocess.run([sys.executable, "-c", PROBE, checkpoint], check=True, capture_output=True, text=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    runs = runs[1:]
    return {"torch_s": round(statistics.median(r["torch_s"] for r in runs), 3),
            "predict_path_s": round(statistics.median(r["predict_path_s"] for r in runs), 3),
            "lightning_imported": any(r["lightning"] for r in runs), "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        unet = str(_unet_checkpoint(Path(tmp) / "unet.pt"))
        result = {"s2mamba": probe("s2mamba:indian_pines_dase", args.repeats), "unet": probe(unet, args.repeats),
                  "goal_predict_path_s_max": 1.5, "repeats": args.repeats, "machine": machine_info()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print("| checkpoint | import torch s | predict path beyond torch s | lightning imported |\n|---|---|---|---|")
    for name in ("s2mamba", "unet"):
        r = result[name]
        print(f"| {name} | {r['torch_s']:.3f} | {r['predict_path_s']:.3f} | {r['lightning_imported']} |")


if __name__ == "__main__":
    main()
