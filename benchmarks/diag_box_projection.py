"""What the BoxInst objective (``data.supervision: boxes``) does inside and outside the boxes of a training half.

    GEOLESF_DATA=/work/shared/data OMP_NUM_THREADS=1 python benchmarks/diag_box_projection.py \\
        [--scene spacenet] [--args '{"stride": 1}'] [--seed 0] [--epochs 15] [--chip 64]

Trains one run of the weak-label benchmark's ``boxes`` row (same scene halves, boxes, unet and trainer as
``benchmarks/bench_weak_labels.py``; class weights ``balanced``, uniform chips; ``--args`` = the row's
``data.supervision_args``) and prints, from the run's ``metrics.json`` and its ``classmap.tif`` of the
TRAINING half: the loss terms every third epoch; the share of the in-box pixels predicted as an object
against the true share; the share predicted as an object outside every box (where the loss says background);
the share of box rows and columns holding at least one predicted object pixel (what the max-projection asks);
the object IoU on the training half. These are the numbers docs/weak_supervision.md quotes for the projection
term at stride 1 and 4 (seed 0, ``--epochs 15 --chip 64``). Training-half numbers only: nothing here is meant
for choosing options on the test half (the run's test mIoU is printed for the record).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    import os

    import torch

    import benchmarks.bench_weak_labels as bench

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scene", default="spacenet")
    p.add_argument("--args", default="{}", help="data.supervision_args of the boxes row (JSON)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--chip", type=int, default=64)
    a = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 1))
    found = bench._scene(a.scene, Path(os.environ.get("GEOLESF_DATA", REPO / "shared" / "data")))
    if found is None:
        p.error(f"scene {a.scene}: data not found")
    image, mask, crs, transform, names = found
    with tempfile.TemporaryDirectory() as folder:
        return _diagnose(Path(folder), a, bench, image, mask, crs, transform, names)


def _diagnose(tmp: Path, a: argparse.Namespace, bench: Any, image: np.ndarray, mask: np.ndarray, crs: Any,
              transform: Any, names: dict[int, str]) -> int:
    import rasterio

    from benchmarks.weak_box_noisy_rows import derive_boxes
    from geolesf.config import from_dict
    from geolesf.methods.unet.boxes import fill_mask, read_scene_boxes
    from geolesf.methods.unet.train import CONFIG, run_config

    sc = bench._halves(image, mask, crs, transform, tmp)
    labels = derive_boxes(sc["train_array"], a.seed, sc["train_grid"], tmp)
    trainer = {**bench.TRAINER, "epochs": a.epochs, "chip": a.chip, "class_weights": "balanced",
               "chip_sampling": "uniform", "seed": a.seed}
    data = {"image": str(sc["train_image"]), "labels": str(labels), "supervision": "boxes", "label_field": "class",
            "supervision_args": json.loads(a.args) or None, "class_names": names,
            "test_image": str(sc["test_image"]), "test_labels": str(sc["test_mask"])}
    run_config(from_dict(CONFIG, {"task": "segmentation", "out": str(tmp / "run"), "data": data, "trainer": trainer,
                                  "model": {"name": "unet", "args": bench.MODEL_ARGS}}))
    m = json.loads((tmp / "run" / "metrics.json").read_text())
    for h in m["history"][::3] + [m["history"][-1]]:
        print({k: round(v, 4) for k, v in h.items()})
    with rasterio.open(tmp / "run" / "classmap.tif") as src:
        pred = src.read(1)
    true = sc["train_array"]
    boxes = read_scene_boxes(labels, sc["train_image"], label_field="class", name_to_id=None, background=0)
    inside = fill_mask(boxes, pred.shape, 0) != 0
    obj_pred, obj_true = (pred != 0) & (pred != 255), (true != 0) & (true != 255)
    hit_rows = hit_cols = n_rows = n_cols = 0
    for c0, r0, c1, r1 in boxes.ranges:
        w = obj_pred[r0:r1 + 1, c0:c1 + 1]
        hit_rows, hit_cols = hit_rows + int(w.any(1).sum()), hit_cols + int(w.any(0).sum())
        n_rows, n_cols = n_rows + w.shape[0], n_cols + w.shape[1]
    print(f"in the boxes: {100 * obj_pred[inside].mean():.1f} % predicted object (true "
          f"{100 * obj_true[inside].mean():.1f} %); outside every box: {100 * obj_pred[~inside].mean():.2f} % "
          "predicted object")
    print(f"box rows / columns with a predicted object pixel: {100 * hit_rows / n_rows:.1f} % / "
          f"{100 * hit_cols / n_cols:.1f} %")
    print(f"training-half object IoU {np.sum(obj_pred & obj_true) / max(np.sum(obj_pred | obj_true), 1):.3f}; "
          f"test mIoU {m['test']['mIoU']:.3f} {m['test']['per_class_IoU']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
