"""Per-pixel hyperspectral classification runs: config → run folder.

``run_hsi(cfg)`` reads the cube and labels, builds the split (with its leakage report), fits
normalisation (and PCA) as configured, trains through the trainer registered for the model's
registry *kind*, predicts the whole scene, and writes::

    OUT/config.yaml    the config (re-run with ``geolesf train --config``), written when the data are read
    OUT/metrics.json   OA, AA, kappa, per_class, confusion_matrix, macro_IoU (test pixels),
                       split (name, params, counts, leakage), cube used, model, timings; written last
    OUT/classmap.tif   the whole scene in original class ids, colour table, class names
    OUT/preview.png    the class map with a legend
    OUT/model.pt       the trained model (rf/svm: ``geolesf-hsi-spectrum/1``; patch models: ``geolesf-hsi-patch/1``)

``trainer.scene_map: false`` classifies the test pixels only and skips the last two files
(:mod:`geolesf.methods.hsi.scene_map`). Data sources may be catalog names (:mod:`geolesf.data.sources`).

With ``trainer.seeds`` each seed gets ``OUT/seed_<s>/`` and ``OUT/summary.json`` holds
mean ± std of OA / AA / kappa. Labels (raster or vector), separate test labels and the block
cross-validation folds come from :mod:`geolesf.data.scene_labels`; with ``data.cv_blocks`` each
fold gets ``OUT/fold_<f>/`` and ``OUT/summary.json`` (:mod:`geolesf.methods.hsi.block_cv`).

Trainers are looked up by the registry kind of the model (``HSI_TRAINERS``): ``spectrum``
(scikit-learn estimators on spectra) is implemented here; a patch-based deep trainer registers
itself for kind ``pixel`` with :func:`register_trainer`.
"""

from __future__ import annotations

import copy
import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from geolesf.config import TrainConfig
from geolesf.data.scene_labels import scene_labels
from geolesf.data.sources import resolve_data
from geolesf.data.splits import Split, leakage_report
from geolesf.methods.hsi.scene_map import predict_for_run, write_scene_map
from geolesf.data.transforms import PCA, BandNormalizer
from geolesf.data.windowed import open_scene_cube, scene_features
from geolesf.errors import ConfigError, DataError, ModelError
from geolesf.io.bands import apply_to_cube
from geolesf.io.hsi import HSICube, LabelMap, split_spec
from geolesf.provenance import machine_info
from geolesf.io.atomic import write_json, write_yaml


# --------------------------------------------------------------------------------------------
# scene preparation


@dataclass
class PreparedScene:
    """Everything a trainer needs: features, class indices, split and provenance."""

    cube: HSICube
    ground_truth: LabelMap
    features: np.ndarray
    """``(H, W, F)`` float32 after normalisation (and PCA); for a windowed scene (``data.windowed``) a
    :class:`geolesf.data.windowed.FeatureWindows` that reads them (``features[mask]`` and ``shape`` work)."""
    y: np.ndarray
    """``(H, W)`` int64 class index 0..C-1, -1 = unlabelled."""
    class_ids: list[int]
    """Original label id of each class index."""
    class_names: list[str]
    class_colors: list[tuple[int, int, int]]
    """RGB colour of each class index (catalog colours for a known ground truth)."""
    split: Split
    leakage: dict[str, Any]
    normalizer: BandNormalizer | None = None
    pca: PCA | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)

    @property
    def num_features(self) -> int:
        return int(self.features.shape[2])

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.y.shape)  # type: ignore[return-value]

    def pixels(self, part: str) -> np.ndarray:
        """``(N, 2)`` row/col of the ``train`` or ``test`` pixels (row-major order)."""
        return np.argwhere(self._mask(part))

    def spectra(self, part: str) -> tuple[np.ndarray, np.ndarray]:
        """``(N, F)`` features and ``(N,)`` class indices of the ``train`` or ``test`` pixels."""
        mask = self._mask(part)
        return self.features[mask], self.y[mask]

    def _mask(self, part: str) -> np.ndarray:
        if part == "train":
            return self.split.train
        if part == "test":
            return self.split.test
        raise ValueError(f"part must be 'train' or 'test', not {part!r}")


def _file_info(spec: str) -> dict[str, Any]:
    from geolesf.registry import sha256_file

    path, key = split_spec(spec)
    info: dict[str, Any] = {"spec": str(spec), "path": str(path), "key": key}
    if path.is_file():
        info["sha256"] = sha256_file(path)
        info["bytes"] = path.stat().st_size
    return info


def _class_legend(data: Any, gt: LabelMap, class_ids: list[int],
                  field_names: dict[int, str]) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Names and colours per class: the config's names, a vector names field's, else the catalog's."""
    from geolesf.data.catalog import classes_for_file
    from geolesf.colors import default_palette

    known = {c.id: c for c in classes_for_file(split_spec(gt.path)[0])} if gt.path else {}
    names_cfg = {**field_names, **{int(k): str(v) for k, v in (data.class_names or {}).items()}}
    names = [names_cfg.get(c, known[c].name if c in known else f"class_{c}") for c in class_ids]
    palette = default_palette(len(class_ids))
    colors = []
    for i, c in enumerate(class_ids):
        hex_colour = known[c].colour.lstrip("#") if c in known else ""
        colors.append(tuple(int(hex_colour[j:j + 2], 16) for j in (0, 2, 4)) if len(hex_colour) == 6 else palette[i])
    return names, colors


def warn_classes(class_ids: list[int], labels: np.ndarray, test: np.ndarray, where: str, split_name: str) -> None:
    """A :class:`UserWarning` for labels with a single class (OA/AA/kappa say nothing) and for
    classes without test pixels (their accuracy is not measured)."""
    import warnings

    if len(class_ids) == 1:
        warnings.warn(f"labels {where} hold a single class (id {class_ids[0]}): accuracy is trivially "
                      "1.0 and says nothing about the model", UserWarning, stacklevel=3)
    untested = [c for c in class_ids if not test[labels == c].any()]
    if untested and len(untested) < len(class_ids):
        warnings.warn(f"classes {untested} have no test pixels in split '{split_name}': their accuracy is not "
                      "measured", UserWarning, stacklevel=3)
    elif untested:
        warnings.warn(f"split '{split_name}' has no test pixels: no accuracy is measured", UserWarning,
                      stacklevel=3)


def prepare_scene(cfg: Any, verbose: bool = False) -> PreparedScene:
    """Read cube and labels, split, measure leakage and fit normalisation/PCA for ``cfg``."""
    data = resolve_data(cfg.data)  # dataset names (data.cube: indian_pines) → local files
    if not data.cube:
        raise ConfigError("no cube given: set data.cube (or --cube PATH)")
    if not data.labels:
        raise ConfigError("no labels given: set data.labels (or --labels PATH)")
    cube, bands = apply_to_cube(open_scene_cube(data), data.drop_bands)  # whole, or a WindowedCube (data.windowed)
    if data.patch_size < 1 or data.patch_size % 2 == 0:
        raise ConfigError(f"data.patch_size must be a positive odd number, found {data.patch_size}")
    labelled = scene_labels(data, cube, seed=cfg.trainer.seed, patch_size=data.patch_size)
    gt, split = labelled.ground_truth, labelled.split
    for line in labelled.notes if verbose else []:
        print(f"note: {line}")
    labels = split.label_map(gt.data)
    class_ids = [int(c) for c in np.unique(labels[(labels > 0) | split.train | split.test]) if c > 0]
    lut = np.full(int(max(class_ids)) + 1, -1, dtype=np.int64)
    lut[class_ids] = np.arange(len(class_ids))
    y = np.where(labels > 0, lut[np.clip(labels, 0, None)], -1)
    class_names, class_colors = _class_legend(data, gt, class_ids, labelled.class_names)
    missing = [c for c in class_ids if not split.train[labels == c].any()]
    if missing and verbose:
        print(f"warning: classes {missing} have no training pixels in split '{split.name}'")
    warn_classes(class_ids, labels, split.test, gt.path, split.name)
    leak = leakage_report(split, data.patch_size)

    x, normalizer, pca = scene_features(cube, split.train, data, cfg.trainer.seed)
    info = {
        "cube": {**_file_info(data.cube), "shape": list(cube.shape), "dtype": str(cube.dtype),
                 "georeferenced": cube.georeferenced, "crs": str(cube.crs) if cube.crs else None,
                 "sensor": cube.sensor, "acquired": cube.acquired, "quality": cube.quality},
        "bands": bands,
        "labels": {**_file_info(data.labels), "labelled_pixels": int((gt.data > 0).sum()), **labelled.report},
        "normalization": normalizer.to_dict() if normalizer else {"type": "none"},
        "pca": pca.to_dict() if pca else None,
    }
    return PreparedScene(
        cube=cube, ground_truth=gt, features=x, y=y,
        class_ids=class_ids, class_names=class_names, class_colors=class_colors, split=split, leakage=leak,
        normalizer=normalizer, pca=pca, info=info,
    )


# --------------------------------------------------------------------------------------------
# trainers


class Predictor(Protocol):
    def predict_scene(self, scene: PreparedScene) -> np.ndarray:
        """``(H, W)`` class indices 0..C-1 for every pixel of the scene."""


TrainFn = Callable[[PreparedScene, Any, Path], Predictor]

#: Trainer per registry model kind. Add one with :func:`register_trainer`.
HSI_TRAINERS: dict[str, TrainFn] = {}

#: Modules imported on first use of a kind that has no trainer yet (they register it).
TRAINER_MODULES: dict[str, str] = {"pixel": "geolesf.methods.hsi.patch_training"}


def register_trainer(kind: str) -> Callable[[TrainFn], TrainFn]:
    """Decorator: ``train_fn(scene, cfg, out_dir) -> Predictor`` for models of ``kind``."""

    def decorator(fn: TrainFn) -> TrainFn:
        HSI_TRAINERS[kind] = fn
        return fn

    return decorator


def get_trainer(model_name: str) -> tuple[TrainFn, str]:
    from geolesf.registry import get_entry

    kind = get_entry(model_name).kind
    if kind not in HSI_TRAINERS and kind in TRAINER_MODULES:
        importlib.import_module(TRAINER_MODULES[kind])
    if kind not in HSI_TRAINERS:
        raise ModelError(
            f"model '{model_name}' is of kind '{kind or 'none'}'; no HSI trainer handles it "
            f"(trainers: {', '.join(sorted(HSI_TRAINERS))})"
        )
    return HSI_TRAINERS[kind], kind


@dataclass
class SpectrumPredictor:
    """Wraps a fitted estimator with ``predict((N, F)) -> class index``."""

    estimator: Any
    chunk: int = 65536

    def predict_scene(self, scene: PreparedScene) -> np.ndarray:
        flat = scene.features.reshape(-1, scene.num_features)
        out = np.empty(flat.shape[0], dtype=np.int64)
        for start in range(0, flat.shape[0], self.chunk):
            out[start:start + self.chunk] = self.estimator.predict(flat[start:start + self.chunk])
        return out.reshape(scene.shape)

    def classify_pixels(self, scene: PreparedScene, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Class indices of the pixels ``(rows, cols)`` only."""
        x = scene.features[rows, cols]
        if x.shape[0] == 0:
            return np.empty(0, dtype=np.int64)
        return np.concatenate([self.estimator.predict(x[s:s + self.chunk]) for s in range(0, x.shape[0], self.chunk)])


@register_trainer("spectrum")
def train_pixel_model(scene: PreparedScene, cfg: Any, out_dir: Path) -> SpectrumPredictor:
    """Fit a registered scikit-learn estimator on the training pixels' spectra; save it as
    ``out_dir/model.pt`` (:mod:`geolesf.methods.hsi.spectrum`, no pickle)."""
    from geolesf.registry import create_model

    x, y = scene.spectra("train")
    if x.shape[0] == 0:
        raise DataError(f"split '{scene.split.name}' has no training pixels")
    args = dict(cfg.model.args or {})
    args.setdefault("seed", cfg.trainer.seed)
    est = create_model(cfg.model.name, in_chans=scene.num_features, num_classes=scene.num_classes, **args)
    est.fit(x, y)
    from geolesf.methods.hsi.spectrum import from_scene, save

    digest = save(out_dir / "model.pt", from_scene(scene, cfg, est, args))
    print(f"[{cfg.model.name}] wrote {out_dir / 'model.pt'} (sha256 {digest[:12]}…)")
    return SpectrumPredictor(est)


# --------------------------------------------------------------------------------------------
# run folder


def score_test_pixels(scene: PreparedScene, truth: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """metrics.json content for test-pixel predictions: metrics per class (with original ids),
    the split with its per-class counts and leakage report, and the data provenance."""
    from geolesf.metrics.classification import classification_metrics

    metrics = classification_metrics(truth, pred, scene.num_classes, scene.class_names)
    for entry, cid in zip(metrics["per_class"], scene.class_ids):
        entry["id"] = cid
    split_info = scene.split.to_dict(scene.ground_truth.data)
    split_info["leakage"] = scene.leakage
    metrics.update(split=split_info, data=scene.info)
    return metrics


def run_single(cfg: Any, out_dir: Path) -> dict[str, Any]:
    """One run (one seed) into ``out_dir``: ``config.yaml`` once the data are read, ``metrics.json`` at
    the end, the whole-scene map unless ``trainer.scene_map`` is false; returns the metrics dict."""
    from geolesf.methods.hsi import windowed

    out_dir.mkdir(parents=True, exist_ok=True)
    np.random.seed(cfg.trainer.seed)
    train_fn, kind = get_trainer(cfg.model.name)
    scene = prepare_scene(cfg, verbose=True)
    write_yaml(out_dir / "config.yaml", cfg)
    leak = scene.leakage
    print(
        f"[{cfg.model.name}] {scene.cube.path}: {scene.shape[0]}×{scene.shape[1]}×{scene.cube.bands}, "
        f"{scene.num_classes} classes; split {scene.split.name}: "
        f"{int(scene.split.train.sum())} train / {int(scene.split.test.sum())} test px; "
        f"leakage ({leak['patch_size']}×{leak['patch_size']} patches): {leak['fraction']:.1%}"
    )
    if scene.cube.crs is None and scene.ground_truth.crs is None:  # a note before the work, not after
        print(f"note: {scene.cube.georef_note()}")
    t0 = time.perf_counter()
    predictor = train_fn(scene, cfg, out_dir)
    fit_s = time.perf_counter() - t0
    if windowed.is_windowed(scene):  # test pixels read through windows; the class map streams below
        t0 = time.perf_counter()
        pred, pred_test = None, windowed.test_predictions(predictor, scene)
        predict_s = time.perf_counter() - t0
    else:
        pred, pred_test, predict_s = predict_for_run(predictor, scene, cfg.trainer.scene_map)
    metrics = score_test_pixels(scene, scene.y[scene.split.test], pred_test)
    metrics.update(
        model={"name": cfg.model.name, "kind": kind, "args": cfg.model.args},
        class_ids=scene.class_ids,
        class_names=scene.class_names,
        seed=cfg.trainer.seed,
        timings={"fit_seconds": fit_s, "predict_seconds": predict_s},
        machine=machine_info(),
    )
    if windowed.is_windowed(scene):
        return windowed.finish_windowed(scene, predictor, cfg, out_dir, metrics)
    if pred is not None:
        write_scene_map(out_dir, scene, cfg, pred, metrics)
    write_json(out_dir / "metrics.json", metrics)
    print(f"[{cfg.model.name}] OA {metrics['OA']:.4f}  AA {metrics['AA']:.4f}  kappa {metrics['kappa']:.4f}  "
          f"(fit {fit_s:.1f} s) → {out_dir}")
    return metrics


def run_hsi(cfg: Any) -> Path:
    """Run ``cfg`` (one seed, or every seed of ``cfg.trainer.seeds``); returns the run folder."""
    out = Path(cfg.out)
    if cfg.data.cv_blocks and cfg.data.cv_fold is None:
        from geolesf.methods.hsi.block_cv import run_block_cv

        return run_block_cv(cfg, run_single)
    seeds = cfg.trainer.seeds
    if not seeds:
        run_single(cfg, out)
        return out
    out.mkdir(parents=True, exist_ok=True)
    write_yaml(out / "config.yaml", cfg)
    results = {}
    for seed in seeds:
        sub = copy.deepcopy(cfg)
        sub.trainer.seed = int(seed)
        sub.trainer.seeds = None
        sub.out = str(out / f"seed_{seed}")
        results[int(seed)] = run_single(sub, Path(sub.out))
    summary: dict[str, Any] = {"seeds": [int(s) for s in seeds], "model": cfg.model.name,
                               "split": cfg.data.split, "std": "sample standard deviation (ddof=1)"}
    for key in ("OA", "AA", "kappa", "macro_IoU"):
        vals = np.array([r[key] for r in results.values()], dtype=np.float64)
        summary[key] = {
            "mean": float(vals.mean()),
            "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
            "values": vals.tolist(),
        }
    write_json(out / "summary.json", summary)
    print(
        f"[{cfg.model.name}] {len(seeds)} seeds: OA {summary['OA']['mean']:.4f} ± {summary['OA']['std']:.4f}  "
        f"AA {summary['AA']['mean']:.4f} ± {summary['AA']['std']:.4f}  "
        f"kappa {summary['kappa']['mean']:.4f} ± {summary['kappa']['std']:.4f} → {out}"
    )
    return out


#: The config class and entry point of the ``hsi`` task (see :mod:`geolesf.formats`).
CONFIG = TrainConfig
run_config = run_hsi
