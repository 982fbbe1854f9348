"""Rows of ``benchmarks/bench_weak_labels.py`` for boxes and noisy masks (issue #22, part 2).

Run through the weak-label benchmark at its budget (``TRAINER`` / ``MODEL_ARGS`` of bench_weak_labels.py).
The committed results came from one invocation per scene and label family, with one torch thread per
process (the shared 2-core machine was oversubscribed: two threads per process ran 20× slower), merged
into one JSON per family (same trainer, model and seeds; ``scenes`` of the two files joined)::

    for sc in spacenet potsdam; do
      GEOLESF_DATA=/work/shared/data OMP_NUM_THREADS=1 python benchmarks/bench_weak_labels.py --scenes $sc \
          --seeds 0,1,2 --out /tmp/boxes_$sc.json \
          --rows "box interior = class,boxes (random-walk pseudo-masks),boxes (Simple Does It),boxes"
      GEOLESF_DATA=/work/shared/data OMP_NUM_THREADS=1 python benchmarks/bench_weak_labels.py --scenes $sc \
          --seeds 0,1,2 --out /tmp/noisy_$sc.json --rows "noisy (CE),noisy (GCE),noisy (GCE + reassign)"
    done
    # → benchmarks/results/weak_labels_boxes.json and weak_labels_noisy.json (scenes of the two files joined)

The ``boxes`` runs of ``weak_labels_boxes.json`` were replaced after the stride fix (BoxInst projection on 4 × 4
cell means), and SpaceNet's BoxInst rows added to ``weak_labels_boxes_budget30.json``, by (one torch thread; the
``--set`` values equal that JSON's settings, uniform chips being the default when they ran; runs joined in)::

    for sc in spacenet potsdam; do
      GEOLESF_DATA=/work/shared/data OMP_NUM_THREADS=1 python benchmarks/bench_weak_labels.py --scenes $sc \
          --seeds 0,1,2 --set epochs=15 --set chip=64 --set class_weights=balanced --set chip_sampling=uniform \
          --out /tmp/boxes15_$sc.json --rows "boxes"
    done
    GEOLESF_DATA=/work/shared/data OMP_NUM_THREADS=1 python benchmarks/bench_weak_labels.py --scenes spacenet \
        --seeds 0,1,2 --set epochs=30 --set chip=96 --set class_weights=balanced --set chip_sampling=uniform \
        --out /tmp/boxes30_spacenet.json --rows "boxes,boxes (stride 1)"

After the ISPRS class-id fix (Potsdam's id 0 is the boundary band of the eroded labels, now no data; it had been
a class) every Potsdam row of the three JSONs was run again and replaced the old ones (one torch thread)::

    S15="--set epochs=15 --set chip=64 --set class_weights=balanced --set chip_sampling=uniform"
    B30="--set epochs=30 --set chip=96 --set class_weights=balanced --set chip_sampling=uniform"
    GEOLESF_DATA=/work/shared/data OMP_NUM_THREADS=1 python benchmarks/bench_weak_labels.py --scenes potsdam \
        --seeds 0,1,2 $S15 --out /tmp/boxes_potsdam.json \
        --rows "box interior = class,boxes (random-walk pseudo-masks),boxes (Simple Does It),boxes"
    GEOLESF_DATA=/work/shared/data OMP_NUM_THREADS=1 python benchmarks/bench_weak_labels.py --scenes potsdam \
        --seeds 0,1,2 $S15 --out /tmp/noisy_potsdam.json --rows "noisy (CE),noisy (GCE),noisy (GCE + reassign)"
    GEOLESF_DATA=/work/shared/data OMP_NUM_THREADS=1 python benchmarks/bench_weak_labels.py --scenes potsdam \
        --seeds 0,1,2 $B30 --out /tmp/b30_potsdam.json \
        --rows "box interior = class,boxes (Simple Does It),boxes (random-walk pseudo-masks)"

The labels of each row are derived from the training half's full mask with the row's seed
(:mod:`geolesf.data.weak_labels_box`):

* ``boxes (Simple Does It)`` — the recursive mode (Khoreva et al. 2017): Box^i round 0 (box centres, box rings
  ignored) and two pseudo-label rounds; ``boxes (random-walk pseudo-masks)`` — the recursive mode with round 0
  from the image (the Box^i labels spread inside each box by Grady's random walk) and no network rounds;
  ``boxes (Box^i, no rounds)`` — an ablation. These rows and the baseline also report the quality of the labels
  the run trained on first, inside the boxes, against the full mask (:func:`score_box_labels`);
* ``boxes`` / ``box interior = class`` — the same boxes (one tight box per connected component of each
  non-background class, jitter :data:`BOX_JITTER`) as a GeoPackage of box polygons with a ``class``
  field; ``boxes`` trains the BoxInst objective (projection + pairwise, options :data:`BOX_ARGS`; the projection
  on 4 × 4 cell means since the stride fix — the ``boxes`` runs of ``weak_labels_boxes.json`` were re-run with it),
  ``boxes (stride 1)`` the projection at full resolution (the earlier default, an ablation: it learns an edge
  detector), ``boxes (projection only)`` the same without the pairwise term (an ablation), ``boxes + filling rate``
  with the filling-rate guided cross-entropy of Song et al. 2019 added (ρ = 0.5), ``box interior = class``
  the baseline (cross-entropy on the boxes filled with their class). Their
  "labelled share" is 1 (the box-filled mask covers the scene); the share of the scene inside a box
  is in the run's metrics (``supervision.box_share``);
* ``noisy (CE)`` / ``noisy (GCE)`` / ``noisy (GCE + reassign)`` — the full mask degraded by the noise
  model :data:`NOISE` (objects dropped or given another class, boundaries eroded/dilated, spurious blobs),
  trained with plain cross-entropy, generalized cross-entropy, or GCE + the label-reassign loss; each run's
  ``overruled.tif`` is scored against the full mask (:func:`score_overruled`: precision and recall of the
  overruling).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

BOX_JITTER = 0.0
"""Relative jitter of each box edge (0: tight boxes, as a register or a careful annotator gives)."""
BOX_ARGS: dict[str, Any] = {}
"""``data.supervision_args`` of the ``boxes`` row: the BoxInst defaults of geolesf/methods/unet/boxes.py."""
SDI_ARGS: dict[str, Any] = {}
"""``data.supervision_args`` of the ``boxes (Simple Does It)`` row besides ``mode: recursive`` (the defaults of
geolesf/methods/unet/boxes.py: inner 20 % of each box, 2 rounds, reset below 50 % fill)."""
RW_ARGS: dict[str, Any] = {"init": "randomwalk", "rounds": 0}
"""The ``boxes (random-walk pseudo-masks)`` row: round 0 from the image (Box^i spread in each box by the random
walk), no network rounds."""
OVERRULE = {"overrule_confidence": 0.9}
"""The noisy rows' ``overruled.tif``: 1 where the prediction differs from the input with a probability ≥ 0.9."""
NOISE: dict[str, Any] = {"boundary_px": 3, "drop_share": 0.2, "wrong_class_share": 0.2, "spurious_share": 0.3,
                         "spurious_radius": (3, 8)}
"""Noise model of the ``noisy`` rows (:func:`geolesf.data.weak_labels_box.noisy_from_mask`)."""


def derive_boxes(mask: np.ndarray, seed: int, grid: tuple[Any, Any], folder: Path) -> Path:
    """Tight (or jittered) boxes of the mask's objects → ``boxes_<seed>.gpkg`` (field ``class``)."""
    from geolesf.data.weak_labels_box import boxes_from_mask, write_boxes_gpkg

    boxes = boxes_from_mask(mask, seed, jitter=BOX_JITTER, background=0, ignore=255)
    return write_boxes_gpkg(folder / f"boxes_{seed}.gpkg", boxes, crs=grid[0], transform=grid[1])


def derive_noisy(mask: np.ndarray, seed: int, grid: tuple[Any, Any], folder: Path) -> Path:
    """The mask degraded by :data:`NOISE` → ``noisy_<seed>.tif`` (255 = unlabelled)."""
    from geolesf.data.weak_labels_box import noisy_from_mask, write_noisy_tif

    noisy, report = noisy_from_mask(mask, seed, background=0, ignore=255, **NOISE)
    print(f"noisy labels (seed {seed}): {100 * report.changed_share:.2f} % of the labelled pixels changed")
    return write_noisy_tif(folder / f"noisy_{seed}.tif", noisy, crs=grid[0], transform=grid[1], report=report)


def score_overruled(run: Path, scene: dict[str, Any], labels: Path) -> dict[str, Any]:
    """How right the run's ``overruled.tif`` is, against the training half's full mask: ``overruled_precision`` —
    the share of overruled pixels (value 1: the prediction differs with probability ≥ the row's
    ``overrule_confidence``) whose input (noisy) label was wrong; ``overruled_recall`` — the share of wrong
    input pixels that were overruled; ``overruled_share`` — overruled / labelled input pixels; the ``differs_*``
    numbers the same for every pixel where the prediction differs (values 1 and 2)."""
    import rasterio

    with rasterio.open(run / "overruled.tif") as src:
        over = src.read(1)
    with rasterio.open(labels) as src:
        noisy = src.read(1)
    clean = scene["train_array"]
    labelled = (over != 255) & (clean != 255)
    wrong = labelled & (noisy != clean)
    out: dict[str, Any] = {"input_wrong_share": float(wrong.sum() / max(labelled.sum(), 1))}
    for key, overruled in (("overruled", labelled & (over == 1)), ("differs", labelled & (over >= 1))):
        hit = int((overruled & wrong).sum())  # "overruled": confident (1); "differs": any disagreement (1 or 2)
        out.update({f"{key}_share": float(overruled.sum() / max(labelled.sum(), 1)),
                    f"{key}_precision": hit / max(int(overruled.sum()), 1),
                    f"{key}_recall": hit / max(int(wrong.sum()), 1)})
    return out


def score_box_labels(run: Path, scene: dict[str, Any], labels: Path) -> dict[str, Any]:
    """How good the labels the box run trained on first are (its ``labels.tif``: the filled boxes, or round 0 of
    the recursive mode, 255 = ignored) against the training half's full mask, inside the boxes:
    ``box_label_accuracy`` — the share of labelled in-box pixels whose label is right; ``box_label_ignored`` — the
    share of in-box pixels left unlabelled; ``box_label_object_IoU`` — IoU of the labels' objects (any
    non-background class) with the mask's objects over the in-box pixels (ignored pixels count as background)."""
    import rasterio

    from geolesf.methods.unet.boxes import fill_mask, read_scene_boxes

    with rasterio.open(run / "labels.tif") as src:
        lab = src.read(1)
    clean = scene["train_array"]
    boxes = read_scene_boxes(labels, scene["train_image"], label_field="class", name_to_id=None, background=0)
    inside = fill_mask(boxes, lab.shape, 0) != 0
    known = inside & (clean != 255)
    labelled = known & (lab != 255)
    obj_lab, obj_true = (lab != 0) & (lab != 255), clean != 0
    inter = int((known & obj_lab & obj_true).sum())
    union = int((known & (obj_lab | obj_true)).sum())
    return {"box_label_accuracy": float((lab[labelled] == clean[labelled]).mean()) if labelled.any() else None,
            "box_label_ignored": float(1 - labelled.sum() / max(known.sum(), 1)),
            "box_label_object_IoU": inter / max(union, 1)}


def rows(label_type: Any) -> dict[str, Any]:
    """The rows, built with the benchmark's ``LabelType(derive, supervision, args)``."""
    return {
        "boxes": label_type(derive_boxes, "boxes", dict(BOX_ARGS)),
        "boxes (stride 1)": label_type(derive_boxes, "boxes", {**BOX_ARGS, "stride": 1}),
        "boxes (projection only)": label_type(derive_boxes, "boxes", {**BOX_ARGS, "lambda_pair": 0.0}),
        "boxes + filling rate": label_type(derive_boxes, "boxes", {**BOX_ARGS, "fill_rate": 0.5}),
        "boxes (Simple Does It)": label_type(derive_boxes, "boxes", {"mode": "recursive", **SDI_ARGS},
                                             score=score_box_labels),
        "boxes (random-walk pseudo-masks)": label_type(derive_boxes, "boxes", {"mode": "recursive", **RW_ARGS},
                                                       score=score_box_labels),
        "boxes (Box^i, no rounds)": label_type(derive_boxes, "boxes", {"mode": "recursive", **SDI_ARGS, "rounds": 0},
                                               score=score_box_labels),
        "box interior = class": label_type(derive_boxes, "boxes", {"mode": "fill"}, score=score_box_labels),
        "noisy (CE)": label_type(derive_noisy, "noisy", {"loss": "ce", "reassign": False, **OVERRULE},
                                 score=score_overruled),
        "noisy (GCE)": label_type(derive_noisy, "noisy", {"loss": "gce", "reassign": False, **OVERRULE},
                                  score=score_overruled),
        "noisy (GCE + reassign)": label_type(derive_noisy, "noisy", {"loss": "gce", "reassign": True, **OVERRULE},
                                             score=score_overruled),
        "noisy (GCE, CE warm-up)": label_type(derive_noisy, "noisy",
                                              {"loss": "gce", "reassign": False, "warmup": 0.3, **OVERRULE},
                                              score=score_overruled),
        "noisy (CE + reassign)": label_type(derive_noisy, "noisy", {"loss": "ce", "reassign": True, **OVERRULE},
                                            score=score_overruled),
    }
