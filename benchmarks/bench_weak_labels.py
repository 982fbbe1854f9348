"""What cheaper labels cost: unet trained from full masks, points and scribbles, tested on a separate region.

    GEOLESF_DATA=/work/shared/data python benchmarks/bench_weak_labels.py \\
        [--seeds 0,1,2] [--scenes spacenet,potsdam,vaihingen,loveda] [--rows full,points,...] \\
        [--out benchmarks/results/weak_labels.json]

For every scene the image and its full mask are split into two spatially separate halves (left =
training region, right = test region, no overlap). Weak labels are derived from the TRAINING half's
full mask by the seeded procedures of :mod:`geolesf.data.weak_labels`, written as GeoPackages (points /
lines with a ``class`` field) and trained through the segmentation task's ordinary run
(:func:`geolesf.methods.unet.train.run_config`: vector labels burnt by the shared label reader,
``data.supervision`` objective, class map + metrics); the score is the mIoU of the TEST half against
its full mask (``data.test_image`` / ``data.test_labels``). Every row runs for every seed (the seed
draws the weak labels and the training); the JSON holds each run and mean ± std per row.

Scenes: ``spacenet`` — SpaceNet Atlanta ``sample_geotiff.tif`` with its 43 footprints (redistributable;
building / background); ``potsdam``, ``vaihingen``, ``loveda`` — the ``rs_seg_tiles`` crops (shared only,
skipped without them; LoveDA tile 0 cropped to its top-left 512 × 1024 px, label 0 = no data). The PNG
tiles carry no georeferencing: they get a local 1 m grid (EPSG:3857 at the origin) so that the vector
labels round-trip exactly as on a real scene.

**Adding a row** (e.g. boxes, ``box interior = class``, noisy masks): add one entry to
:data:`LABEL_TYPES`: ``LabelType(derive, supervision, args)`` where ``derive(mask, seed, grid, folder)``
returns the label file written into ``folder`` from the training half's full mask (``mask``: uint8,
255 = ignore; ``grid``: ``(crs, transform)``), ``supervision`` is the ``data.supervision`` value and
``args`` its ``data.supervision_args``. The row's "labelled share" is read back from the run's
``labels.tif`` (labelled pixels / pixels with image data). ``--rows NAME --merge`` runs only the new
row and keeps the others already in ``--out`` (same settings and seeds required; runs are
deterministic per seed on a CPU).

Rows: full masks (class-weighted cross-entropy, ``trainer.class_weights``); points and scribbles with partial
cross-entropy alone (``prior_weight: 0``, the baseline), with the gated CRF prior (the objective's default weight
0.01), with the random-walk propagation of the labels (``propagate: 0.5``: Grady 2006, pixels the walk is ≥ 0.7
sure of become extra labels at half weight; :mod:`geolesf.data.propagation`) and with both. A "prior alone" row
is not meaningful: without any label the prior cannot name classes (a constant map minimises it). Points with
two pseudo-label rounds (``rounds: 2``: after epochs 5 and 10, confident pixels — ≥ 0.9 after the class-weight
correction — become labels at weight 0.5; Lee 2013) and with a mean teacher (``mean_teacher: {}``, the defaults:
consistency weight 10, EMA 0.99, ramp-up over 5 epochs; Tarvainen & Valpola 2017; the teacher is evaluated), each
alone and on top of the random walk (:mod:`geolesf.methods.unet.sparse`, :mod:`geolesf.methods.unet.mean_teacher`);
scribbles with each of the two. The earlier
"sharp prior" (σ_img 0.15) and "coarse prior" (scale 4) rows were dropped: under the old budget they were within
seed noise of the plain prior.

**Budget** (:data:`TRAINER`, :data:`MODEL_ARGS`): 300 steps of 8 chips of 64 px, unet base 8 / depth 3, cosine
learning rate, class-weighted cross-entropy (``class_weights: enet``, 1 / ln(1.02 + class share), Paszke et al.
2016) and class-balanced chips (``chip_sampling: balanced``: each chip around a pixel of a uniformly drawn
class). The old budget (150 steps of 4 chips, depth 2, unweighted, uniform chips) measured nothing: full masks
predicted "everything background" on SpaceNet (0.480, building IoU 0; buildings are 4 % of the pixels) even with
600 steps of 8 chips of 96 px, and scored below points on Potsdam. Measured while choosing (seed 0, full masks):
inverse-frequency weights (``balanced``) with uniform chips: SpaceNet 0.545, Potsdam 0.270 (its training half holds
18 px of class 5, weight ≈ 1,200); ``enet`` with uniform chips: Potsdam 0.307 (points 0.381 at that setting);
``enet`` + balanced chips: SpaceNet 0.643. The numbers compare label types under one budget, they are not the
accuracy a full training reaches.

The results in ``benchmarks/results/weak_labels.json`` are all one-torch-thread runs (``OMP_NUM_THREADS=1``;
the float sums run in another order with two threads, which moves a row's mean by up to about one seed spread),
from these invocations (``GEOLESF_DATA=/work/shared/data OMP_NUM_THREADS=1 python benchmarks/bench_weak_labels.py``
plus the arguments; runs deterministic per seed, files joined scene by scene or row by row)::

    # SpaceNet and LoveDA (ALL: the 15 rows of LABEL_TYPES from "full" to "scribbles + mean teacher" that are
    # not boxes or noisy masks)
    --seeds 0,1,2 --scenes spacenet,vaihingen,potsdam,loveda --merge \
        --rows "full,points,points + propagation,points + rounds,points + propagation + rounds,points + mean teacher,points + propagation + mean teacher"
    --seeds 0,1,2 --scenes spacenet,vaihingen,potsdam,loveda --merge \
        --rows "scribbles,scribbles + rounds,scribbles + mean teacher"
    --seeds 0,1,2 --scenes spacenet --out /tmp/wl_spacenet.json \
        --rows "points + prior,points + propagation + prior,scribbles + prior,scribbles + propagation,scribbles + propagation + prior"
    # Potsdam and Vaihingen, every row again after the ISPRS class-id fix (their id 0, the boundary band of the
    # eroded labels, had been scored as a class); these replaced the two scenes of the runs above
    --seeds 0,1,2 --scenes potsdam --rows "$ALL" --out /tmp/wl_potsdam.json
    --seeds 0,1,2 --scenes vaihingen --rows "$ALL" --out /tmp/wl_vaihingen.json

(10-20 s a run with one thread; two such jobs side by side on the 2-core machine took about 20 min for the
Potsdam and Vaihingen re-runs.)

**Boxes around object classes** (``benchmarks/results/weak_labels_boxes_things.json``): scenes ``potsdam_things``
and ``vaihingen_things`` (:data:`THINGS`: boxes only around the thing classes, every other class merged into
"other" in the training labels and the test mask), at the budget of ``weak_labels_boxes_budget30.json`` (30 epochs
of 96-px chips, inverse-frequency class weights, uniform chips), one torch thread, one invocation per scene and
row group, files joined (same settings and seeds; runs deterministic per seed)::

    B30="--set epochs=30 --set chip=96 --set class_weights=balanced --set chip_sampling=uniform"
    for sc in potsdam_things vaihingen_things; do
      GEOLESF_DATA=/work/shared/data OMP_NUM_THREADS=1 python benchmarks/bench_weak_labels.py --scenes $sc \
          --seeds 0,1,2 $B30 --out /tmp/$sc.json \
          --rows "full,box interior = class,boxes (random-walk pseudo-masks),boxes (Simple Does It)"
      GEOLESF_DATA=/work/shared/data OMP_NUM_THREADS=1 python benchmarks/bench_weak_labels.py --scenes $sc \
          --seeds 0,1,2 $B30 --out /tmp/boxes_$sc.json --rows "boxes"    # then "boxes (stride 1)" likewise
    done
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TRAINER = {"epochs": 15, "steps_per_epoch": 20, "chip": 64, "batch_size": 8, "lr": 0.005, "lr_schedule": "cosine",
           "class_weights": "enet", "chip_sampling": "balanced"}
MODEL_ARGS = {"base": 8, "depth": 3}
POINTS_PER_CLASS = 40
"""Points per class in the training half (clicks at least 2 px inside their class region)."""


@dataclass
class LabelType:
    derive: Callable[[np.ndarray, int, tuple[Any, Any], Path], Path | None]
    supervision: str
    args: dict[str, Any] = field(default_factory=dict)
    score: Callable[[Path, dict[str, Any], Path], dict[str, Any]] | None = None
    """Optional extra numbers of a run: ``score(run folder, scene, label file)`` → merged into the run's entry."""


def _full(mask: np.ndarray, seed: int, grid: tuple[Any, Any], folder: Path) -> None:
    return None  # the full mask raster itself (see _labels_for)


def _points(mask: np.ndarray, seed: int, grid: tuple[Any, Any], folder: Path) -> Path:
    from geolesf.data.weak_labels import points_from_mask, points_to_vector

    sparse = points_from_mask(mask, per_class=POINTS_PER_CLASS, seed=seed, margin=2)
    return points_to_vector(sparse, folder / f"points_{seed}.gpkg", crs=grid[0], transform=grid[1])


def _scribbles(mask: np.ndarray, seed: int, grid: tuple[Any, Any], folder: Path) -> Path:
    from geolesf.data.weak_labels import scribbles_from_mask, scribbles_to_vector

    lines = scribbles_from_mask(mask, seed=seed, erode=3, max_length=150, area_per_scribble=15000, min_area=50)
    return scribbles_to_vector(lines, folder / f"scribbles_{seed}.gpkg", crs=grid[0], transform=grid[1])


PRIOR = {"prior_weight": 0.01}
"""The gated CRF prior of the "+ prior" rows (the rest: the objective's defaults)."""
PROPAGATION = {"propagate": 0.5}
"""The "+ propagation" rows: random-walk labels (Grady 2006) from the sparse labels, weight 0.5 in the loss
(β 10 and threshold 0.7: the objective's defaults)."""
ROUNDS = {"rounds": 2}
"""The "+ rounds" rows: two pseudo-label rounds (after epochs 5 and 10 of 15), confident pixels (≥ 0.9 after the
class-weight correction) become labels at weight 0.5 (the objective's defaults; Lee 2013)."""
MEAN_TEACHER = {"mean_teacher": {}}
"""The "+ mean teacher" rows: the objective's defaults (consistency weight 10, EMA 0.99, ramp-up over 5 epochs,
noise 0.1, jitter 0.1; Tarvainen & Valpola 2017); the teacher is evaluated."""

LABEL_TYPES: dict[str, LabelType] = {
    "full": LabelType(_full, "mask"),
    "points": LabelType(_points, "points", {"prior_weight": 0.0}),
    "points + prior": LabelType(_points, "points", PRIOR),
    "points + propagation": LabelType(_points, "points", {"prior_weight": 0.0, **PROPAGATION}),
    "points + propagation + prior": LabelType(_points, "points", {**PRIOR, **PROPAGATION}),
    "scribbles": LabelType(_scribbles, "scribbles", {"prior_weight": 0.0}),
    "scribbles + prior": LabelType(_scribbles, "scribbles", PRIOR),
    "scribbles + propagation": LabelType(_scribbles, "scribbles", {"prior_weight": 0.0, **PROPAGATION}),
    "scribbles + propagation + prior": LabelType(_scribbles, "scribbles", {**PRIOR, **PROPAGATION}),
    "points + rounds": LabelType(_points, "points", {"prior_weight": 0.0, **ROUNDS}),
    "points + propagation + rounds": LabelType(_points, "points", {"prior_weight": 0.0, **PROPAGATION, **ROUNDS}),
    "points + mean teacher": LabelType(_points, "points", {"prior_weight": 0.0, **MEAN_TEACHER}),
    "points + propagation + mean teacher": LabelType(_points, "points",
                                                     {"prior_weight": 0.0, **PROPAGATION, **MEAN_TEACHER}),
    "scribbles + rounds": LabelType(_scribbles, "scribbles", {"prior_weight": 0.0, **ROUNDS}),
    "scribbles + mean teacher": LabelType(_scribbles, "scribbles", {"prior_weight": 0.0, **MEAN_TEACHER}),
}
"""Row name → how its labels are derived and which objective trains on them (module docstring)."""

from benchmarks.weak_box_noisy_rows import rows as _box_noisy_rows  # noqa: E402 - boxes / noisy rows (#22 part 2)

LABEL_TYPES.update(_box_noisy_rows(LabelType))


def _write_tif(path: Path, arr: np.ndarray, crs: Any, transform: Any, nodata: Any = None) -> Path:
    import rasterio

    arr = arr if arr.ndim == 3 else arr[None]
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                       dtype=arr.dtype, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(arr)
    return path


THINGS: dict[str, dict[int, str]] = {
    "potsdam": {2: "building", 4: "tree"},
    "vaihingen": {2: "building", 5: "car"},
}
"""Scene ``NAME_things`` = scene ``NAME`` with only object classes (the thing classes for
:func:`geolesf.data.weak_labels_box.thing_mask`; every other class → 0 "other", in training labels and test mask
alike). The ISPRS tiles use mmsegmentation's raw ids (checked against the images): 0 = the boundary band of the
eroded labels (no data already in scene ``NAME``; a band between regions, under 1.6 % of it survives a 9 × 9
opening), 1 impervious
surfaces, 2 building, 3 low vegetation, 4 tree, 5 car. Potsdam's cars (18 px in the training half) and Vaihingen's
trees (0 px in it) are merged into "other": no label type can learn a class its training half lacks. LoveDA has
no ``_things`` scene: its one thing class (building, 2) is absent from the test half."""


def _scene(name: str, data: Path) -> tuple[np.ndarray, np.ndarray, Any, Any, dict[int, str]] | None:
    """``(image (bands, H, W), mask (H, W) uint8 255 = ignore, crs, transform, class names)`` or None if absent."""
    import rasterio
    from rasterio.transform import from_origin

    if name.endswith("_things"):
        from geolesf.data.weak_labels_box import thing_mask

        found = _scene(name[:-len("_things")], data)
        if found is None:
            return None
        mask, names = thing_mask(found[1], THINGS[name[:-len("_things")]])
        return found[0], mask, found[2], found[3], names
    if name == "spacenet":
        from geolesf.io.labels import burn_vector_labels

        img = data / "spacenet_solaris" / "sample_geotiff.tif"
        with rasterio.open(img) as src:
            image, crs, transform = src.read(), src.crs, src.transform
        burned = burn_vector_labels(data / "spacenet_solaris" / "geotiff_labels.geojson", crs=crs,
                                    transform=transform, shape=image.shape[1:])
        mask = np.where(burned.data == -1, 0, np.where(burned.data < 0, 255, burned.data)).astype(np.uint8)
        return image, mask, crs, transform, {0: "background", 1: "building"}
    from PIL import Image

    from geolesf.data.benchmarks.aerial_tags import SOURCES as AERIAL_SOURCES

    tiles = {"potsdam": "potsdam/{}/2_10_0_0_512_512.png", "vaihingen": "vaihingen/{}/area1_0_0_512_512.png",
             "loveda": "loveda/{}/0.png"}
    base = data / "rs_seg_tiles"
    if not (base / tiles[name].format("img")).is_file():
        return None
    image = np.asarray(Image.open(base / tiles[name].format("img")).convert("RGB")).transpose(2, 0, 1).copy()
    mask = np.asarray(Image.open(base / tiles[name].format("ann"))).astype(np.uint8).copy()
    if name == "loveda":
        image, mask = image[:, :512], mask[:512]
    # class ids and names of mmsegmentation's converted tiles (geolesf.data.benchmarks.aerial_tags): LoveDA 0 and
    # the ISPRS tiles' 0 (the boundary band of the eroded labels) are no data
    ids, class_names, nodata = AERIAL_SOURCES[name]
    mask[np.isin(mask, nodata)] = 255
    names = {int(c): class_names[ids.index(int(c))] for c in np.unique(mask) if c != 255}
    return image, mask, "EPSG:3857", from_origin(0, mask.shape[0], 1, 1), names


def _halves(image: np.ndarray, mask: np.ndarray, crs: Any, transform: Any, folder: Path) -> dict[str, Any]:
    """Left half = training region, right half = test region (spatially separate), as GeoTIFFs."""
    w = mask.shape[1] // 2
    out = {}
    for part, cols in (("train", slice(0, w)), ("test", slice(w, 2 * w))):
        t = transform * transform.translation(cols.start, 0)
        out[f"{part}_image"] = _write_tif(folder / f"{part}.tif", image[:, :, cols], crs, t)
        out[f"{part}_mask"] = _write_tif(folder / f"{part}_mask.tif", mask[:, cols], crs, t, nodata=255)
        out[f"{part}_grid"] = (crs, t)
        out[f"{part}_array"] = mask[:, cols]
    return out


def _run(scene: dict[str, Any], row: str, seed: int, names: dict[int, str], folder: Path) -> dict[str, Any]:
    import rasterio

    from geolesf.config import from_dict
    from geolesf.methods.unet.train import CONFIG, run_config

    kind = LABEL_TYPES[row]
    labels = kind.derive(scene["train_array"], seed, scene["train_grid"], folder) or scene["train_mask"]
    out = folder / f"run_{row.replace(' + ', '_').replace(' ', '_')}_{seed}"
    data = {"image": str(scene["train_image"]), "labels": str(labels), "supervision": kind.supervision,
            "supervision_args": kind.args or None, "class_names": names, "test_image": str(scene["test_image"]),
            "test_labels": str(scene["test_mask"])}
    if str(labels).endswith(".gpkg"):
        data["label_field"] = "class"
    cfg = from_dict(CONFIG, {"task": "segmentation", "out": str(out), "model": {"name": "unet", "args": MODEL_ARGS},
                             "data": data, "trainer": {**TRAINER, "seed": seed}})
    start = time.perf_counter()
    run_config(cfg)
    seconds = time.perf_counter() - start
    metrics = json.loads((out / "metrics.json").read_text())
    with rasterio.open(out / "labels.tif" if (out / "labels.tif").is_file() else labels) as lab:
        lab_arr = lab.read(1)
    share = float(np.count_nonzero(lab_arr != 255)) / lab_arr.size
    extra = kind.score(out, scene, Path(labels)) if kind.score is not None else {}
    return {"row": row, "seed": seed, "test_mIoU": metrics["test"]["mIoU"], "labelled_share": share,
            "test_per_class_IoU": metrics["test"]["per_class_IoU"], "seconds": round(seconds, 1), **extra}


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in runs:
        out.setdefault(r["row"], []).append(r)
    return {row: {"test_mIoU_mean": float(np.mean([r["test_mIoU"] for r in rs])),
                  "test_mIoU_std": float(np.std([r["test_mIoU"] for r in rs])),
                  "labelled_share_mean": float(np.mean([r["labelled_share"] for r in rs])),
                  "seeds": [r["seed"] for r in rs]} for row, rs in out.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "weak_labels.json"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--scenes", default="potsdam,spacenet,vaihingen")
    parser.add_argument("--rows", default=",".join(LABEL_TYPES))
    parser.add_argument("--merge", action="store_true",
                        help="keep the other rows already in --out and replace only the rows run now (runs are "
                        "deterministic per seed, so adding a row this way equals one full run)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="change a training setting for a quick look, e.g. --set epochs=2 (keys of TRAINER, "
                        "or model.base / model.depth)")
    args = parser.parse_args(argv)
    for item in args.sets:
        key, _, value = item.partition("=")
        if key.startswith("model.") and key[6:] in MODEL_ARGS:
            MODEL_ARGS[key[6:]] = int(value)
            continue
        if key not in TRAINER:
            parser.error(f"--set {item}: expected one of {', '.join(TRAINER)}")
        TRAINER[key] = type(TRAINER[key])(value)
    import torch

    from benchmarks._machine import machine_info

    # OMP_NUM_THREADS=1 on a busy shared machine: two threads per process there ran ~20× slower (spin-waiting)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or min(2, os.cpu_count() or 1)))
    data = Path(os.environ.get("GEOLESF_DATA", REPO / "shared" / "data"))
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = [r.strip() for r in args.rows.split(",")]
    result: dict[str, Any] = {"trainer": TRAINER, "model_args": MODEL_ARGS, "points_per_class": POINTS_PER_CLASS,
                              "seeds": seeds, "scenes": {}, "machine": machine_info()}
    old = json.loads(Path(args.out).read_text()) if args.merge and Path(args.out).is_file() else None
    if old is not None:
        if (old["trainer"], old["model_args"], old["seeds"]) != (TRAINER, MODEL_ARGS, seeds):
            parser.error(f"--merge: {args.out} was run with other settings or seeds")
        result["scenes"] = old["scenes"]
    for name in args.scenes.split(","):
        found = _scene(name, data)
        if found is None:
            print(f"{name}: not in {data}, skipped")
            continue
        image, mask, crs, transform, names = found
        with tempfile.TemporaryDirectory() as tmp:
            scene = _halves(image, mask, crs, transform, Path(tmp))
            runs = [_run(scene, row, seed, names, Path(tmp)) for row in rows for seed in seeds]
        kept = [r for r in result["scenes"].get(name, {}).get("runs", []) if r["row"] not in rows]
        runs = sorted(kept + runs, key=lambda r: (list(LABEL_TYPES).index(r["row"]) if r["row"] in LABEL_TYPES
                                                  else len(LABEL_TYPES), r["seed"]))
        result["scenes"][name] = {"shape": list(mask.shape), "classes": names, "runs": runs,
                                  "summary": _summary(runs)}
        for row, s in result["scenes"][name]["summary"].items():
            print(f"{name:10s} {row:20s} mIoU {s['test_mIoU_mean']:.4f} ± {s['test_mIoU_std']:.4f}  "
                  f"labelled {100 * s['labelled_share_mean']:.3f} %")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))  # after every scene: a partial run keeps its scenes
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
