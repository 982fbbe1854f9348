"""Why pseudo-label rounds and the mean teacher did not help points: a diagnosis on the TRAINING halves only.

    GEOLESF_DATA=/work/shared/data OMP_NUM_THREADS=1 python benchmarks/diag_weak_rounds.py \\
        [--scenes spacenet,vaihingen] [--seeds 0,1,2] [--out benchmarks/results/weak_rounds_diagnosis.json]

Runs the rows "points + propagation + rounds", "points + mean teacher" and "points + propagation + mean teacher"
of :mod:`benchmarks.bench_weak_labels` (same scenes, halves, labels, budget and seeds, so the runs are those of
its table) and records, against the full mask of the training half (which the training never sees; the test
half is not looked at beyond the run's own score):

* ``walk``: accuracy of the random walk's labels and the share of the pixels they cover;
* ``round``: the same for each pseudo-label round's labels (epoch, accuracy, share);
* ``student_vs_teacher_train_half_mIoU``: mIoU of the student's and of the teacher's map of the training half just
  before the teacher is saved.

The objective's methods are wrapped for the run (recording only; the training is unchanged). About 6 min on the
shared 2-core machine with one torch thread. Findings: docs/weak_supervision.md ("Pseudo-label rounds and the mean
teacher: measured").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ROWS = ("points + propagation + rounds", "points + mean teacher", "points + propagation + mean teacher")
TRUTH: dict[str, np.ndarray] = {}
LOG: list[dict[str, Any]] = []


def _accuracy(labels: np.ndarray) -> dict[str, float]:
    from geolesf.methods.unet.objectives import IGNORE

    t = TRUTH["index"]
    m = (labels != IGNORE) & (t >= 0)
    return {"accuracy": float((labels[m] == t[m]).mean()) if m.any() else float("nan"), "share": float(m.mean())}


def _miou(pred: np.ndarray) -> float:
    t = TRUTH["index"]
    m = t >= 0
    return float(np.mean([((pred == k) & (t == k) & m).sum() / (((pred == k) | (t == k)) & m).sum()
                          for k in np.unique(t[m])]))


def _record() -> None:
    """Wrap the round, the random walk and the teacher's last-epoch hook to log what they produce."""
    from geolesf.methods.unet import mean_teacher, sparse
    from geolesf.methods.unet.box_rounds import scene_probabilities

    round_, propagate, end = (sparse.SparseObjective._round, sparse.SparseObjective._propagate,
                              mean_teacher.MeanTeacher.on_epoch_end)

    def _round(self: Any, epoch: int, state: Any) -> None:
        round_(self, epoch, state)
        LOG.append({"what": "round", "epoch": epoch, **_accuracy(state.rasters["pseudo"])})

    def _propagate(self: Any, state: Any) -> None:
        propagate(self, state)
        LOG.append({"what": "walk", **_accuracy(state.rasters["propagated"])})

    def _end(self: Any, epoch: int, state: Any) -> None:
        if epoch == state.epochs and self.teacher is not None:
            student = scene_probabilities(state.model, state.image).argmax(0)
            teacher = scene_probabilities(self.teacher, state.image).argmax(0)
            LOG.append({"what": "student_vs_teacher_train_half_mIoU", "student": _miou(student),
                        "teacher": _miou(teacher)})
        end(self, epoch, state)

    sparse.SparseObjective._round, sparse.SparseObjective._propagate = _round, _propagate
    mean_teacher.MeanTeacher.on_epoch_end = _end


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", default="spacenet,vaihingen")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "weak_rounds_diagnosis.json"))
    args = parser.parse_args(argv)
    import torch

    import benchmarks.bench_weak_labels as bench

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 1))
    _record()
    data = Path(os.environ.get("GEOLESF_DATA", REPO / "shared" / "data"))
    out: dict[str, Any] = {"rows": list(ROWS), "trainer": bench.TRAINER, "runs": []}
    for name in args.scenes.split(","):
        found = bench._scene(name, data)
        if found is None:
            print(f"{name}: not in {data}, skipped")
            continue
        image, mask, crs, transform, names = found
        ids = sorted(names)
        with tempfile.TemporaryDirectory() as tmp:
            scene = bench._halves(image, mask, crs, transform, Path(tmp))
            lut = np.full(256, -1)
            lut[ids] = np.arange(len(ids))
            TRUTH["index"] = lut[scene["train_array"]]
            for row in ROWS:
                for seed in (int(s) for s in args.seeds.split(",")):
                    LOG.clear()
                    run = bench._run(scene, row, seed, names, Path(tmp))
                    out["runs"].append({"scene": name, "row": row, "seed": seed, "test_mIoU": run["test_mIoU"],
                                        "log": list(LOG)})
                    print(name, row, seed, json.dumps(LOG), flush=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
