"""S²Mamba throughput on the real Indian Pines scene (embedded 8-bit copy, 145×145×200).

1. Whole-scene map: pixels/s of patch inference (batch 1024, P = 7) with each available
   selective-scan backend. The ``reference`` backend is timed on a slice of the scene (it is the
   readable definition, not a production path); the others on all 21,025 pixels.
2. Training time per epoch for the official Indian Pines configuration
   (``geolesf/configs/s2mamba/indian_pines.yaml``: fixed SpectralFormer split, 695 training pixels, batch 64),
   measured over a few epochs of the real Lightning loop. Needs ``GEOLESF_DATA`` for the fixed maps;
   without it the 10 % random split (1,025 pixels) is used and the JSON says so.

    python benchmarks/bench_s2mamba.py [--epochs 3] [--reference-pixels 2048]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "s2mamba.json"


def scene_throughput(backends: list[str], reference_pixels: int) -> dict[str, dict[str, float]]:
    from geolesf.io.hsi import read_cube
    from geolesf.methods.hsi.s2mamba import S2Mamba
    from geolesf.predict.patches import PatchGatherer, predict_pixels

    cube = read_cube(ROOT / "geolesf/embedded/indian_pines/IP_200_M.mat").data.astype(np.float32)
    cube = (cube - cube.mean((0, 1))) / cube.std((0, 1))
    h, w, bands = cube.shape
    gather = PatchGatherer(cube, 7, "symmetric")
    rows, cols = np.divmod(np.arange(h * w), w)
    out: dict[str, dict[str, float]] = {}
    torch.manual_seed(0)
    model = S2Mamba(bands, 16, 7).eval()
    for backend in backends:
        for m in model.modules():
            if hasattr(m, "scan_backend"):
                m.scan_backend = backend
        n = min(reference_pixels, h * w) if backend == "reference" else h * w
        with torch.inference_mode():
            predict_pixels(model, gather, rows[:1024], cols[:1024], 1024, progress=False)  # warm-up
            start = time.perf_counter()
            predict_pixels(model, gather, rows[:n], cols[:n], 1024, progress=False)
            seconds = time.perf_counter() - start
        out[backend] = {"pixels": int(n), "seconds": seconds, "pixels_per_second": n / seconds}
        print(f"scene map, backend {backend:>9}: {n / seconds:10,.0f} px/s ({n} px in {seconds:.2f} s)")
    return out


def epoch_time(epochs: int) -> dict[str, object]:
    from geolesf.config import TrainConfig, load_config
    from geolesf.methods.hsi.patch_training import train_patch_model
    from geolesf.methods.hsi.train import prepare_scene

    overrides = [f"trainer.epochs={epochs}", "trainer.eval_every=0"]
    data = os.environ.get("GEOLESF_DATA")
    if data and Path(data, "indian_pines_fixed_split").is_dir():
        cfg = load_config(TrainConfig, ROOT / "geolesf/configs/s2mamba/indian_pines.yaml", overrides)
        split = "fixed (SpectralFormer maps)"
    else:
        cfg = load_config(TrainConfig, ROOT / "geolesf/configs/s2mamba/indian_pines_random10.yaml", overrides)
        split = "random 10 % (fixed maps not available)"
    scene = prepare_scene(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train_patch_model(scene, cfg, Path(tmp))
        seconds = time.perf_counter() - start
    per_epoch = seconds / epochs
    n_train = int(scene.split.train.sum())
    print(f"training: {per_epoch:.2f} s/epoch ({n_train} training px, batch {cfg.trainer.batch_size}, split {split}); "
          f"400 epochs ≈ {400 * per_epoch / 60:.1f} min")
    return {"split": split, "train_pixels": n_train, "epochs_timed": epochs, "seconds_per_epoch": per_epoch,
            "estimated_400_epochs_min": 400 * per_epoch / 60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--reference-pixels", type=int, default=2048)
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    # CPU backends only: the mamba_ssm kernel needs CUDA (timed separately when a GPU is available).
    result = {"scene": scene_throughput(["reference", "cpu"], args.reference_pixels), "machine": machine_info()}
    if not args.skip_training:
        result["training"] = epoch_time(args.epochs)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
