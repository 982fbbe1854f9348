"""Task ``segmentation``: train a dense segmenter (``unet``) on a GeoTIFF and its labels.

``geolesf train --config segmentation/unet_spacenet_buildings`` reads

- ``data.image``: any raster rasterio opens (its mask / nodata marks unusable pixels);
- ``data.labels``: either a label raster on the same grid (class ids; its nodata, or
  ``data.ignore_value``, marks unlabelled pixels) or a vector file (GeoPackage, GeoJSON,
  shapefile) whose features are burnt onto the image grid — value ``data.label_field`` of each
  feature (integer ids, or class names numbered 1..N in sorted order unless ``data.class_names``
  gives their ids), or 1 for every feature when no field is named; pixels outside every feature get
  ``data.background`` (default 0, i.e. "not a building" for footprints) and pixels two classes claim
  get 255 (ignored), through the burner the HSI task shares (:mod:`geolesf.io.labels`);

``data.supervision`` says what the labels are: ``mask`` (the default, full masks as above),
``points`` or ``scribbles`` (sparse labels: unburnt pixels are unlabelled; partial cross-entropy +
gated CRF prior) — one objective each (:mod:`geolesf.methods.unet.objectives`, options in
``data.supervision_args``). Full labels for evaluation only: ``data.eval_labels`` (the training
scene) and ``data.test_image`` + ``data.test_labels`` (a spatially separate region).

trains on random chips (:func:`train_segmenter`) and writes into ``out``: ``model.pt``
(``geolesf-segmentation/1``), ``labels.tif`` when labels were rasterised, ``classmap.tif`` (the
training scene's predicted class map, COG + ``.qml``), ``metrics.json`` (loss history, the
supervision's report and the *training-scene* fit against the training labels: mIoU, per-class IoU
— fit, not generalisation; ``eval_labels`` and ``test`` when given; evaluate on another scene with
``geolesf evaluate --checkpoint model.pt --option image=… --option labels=…``) and ``config.yaml``.
The checkpoint predicts any scene with ``geolesf predict scene.tif --checkpoint run/model.pt``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geolesf.config import ModelConfig
from geolesf.config import run_config_class
from geolesf.errors import ConfigError, DataError
from geolesf.io.labels import VECTOR_SUFFIXES, burn_to_raster
from geolesf.methods.unet.checkpoint import SegmentationCheckpoint, save
from geolesf.methods.unet.model import unet
from geolesf.methods.unet.objectives import CLASS_WEIGHTS, IGNORE
from geolesf.io.atomic import write_json, write_yaml


@dataclass
class SegDataConfig:
    image: str | None = None
    """Input raster (GeoTIFF or anything rasterio opens)."""
    labels: str | None = None
    """Label raster on the image grid, or a vector file rasterised onto it."""
    label_field: str | None = None
    """Vector labels: attribute holding class ids or names (default: every feature is class 1)."""
    all_touched: bool = False
    """Vector labels: burn every pixel a feature touches (default: pixels whose centre is inside)."""
    background: int = 0
    """Vector labels: class id of pixels outside every feature."""
    ignore_value: int | None = None
    """Label value of unlabelled pixels (default: the label raster's nodata)."""
    class_names: dict[int, str] | None = None
    colors: dict[int, str] | None = None
    supervision: str = "mask"
    """How ``labels`` supervise: mask (full masks), points, scribbles (:mod:`geolesf.methods.unet.objectives`)."""
    supervision_args: dict[str, Any] | None = None
    """Options of the supervision's objective (e.g. ``{prior_weight: 1.0}`` for points)."""
    eval_labels: str | None = None
    """Full labels of the training scene used for evaluation only (raster or vector, burnt as ``labels``)."""
    test_image: str | None = None
    """A spatially separate region (raster) to evaluate on, with ``test_labels``."""
    test_labels: str | None = None
    """Full labels of ``test_image`` (raster or vector)."""
    eval_label_field: str | None = None
    """Vector ``eval_labels`` / ``test_labels``: attribute holding the class (default: every feature is class 1)."""


@dataclass
class SegModelConfig(ModelConfig):
    """``args``: constructor arguments of ``unet`` (``in_chans`` and ``num_classes`` are filled in)."""

    name: str = "unet"


@dataclass
class SegTrainerConfig:
    epochs: int = 10
    steps_per_epoch: int = 20
    chip: int = 128
    batch_size: int = 8
    lr: float = 2e-3
    lr_schedule: str = "constant"
    """``constant`` (the default) or ``cosine`` (decay to 0 over the run, one step per batch)."""
    seed: int = 0
    device: str = "cpu"
    class_weights: str = "none"
    chip_sampling: str = "uniform"
    """``uniform`` (the default: chips anywhere; sparse labels: around a random labelled pixel) or ``balanced``
    (each chip holds a pixel of a class drawn uniformly among the labelled classes: rare classes seen as often
    as common ones)."""
    """Cross-entropy class weights from the labelled pixels of the scene: ``none`` (the default), ``balanced``
    (inverse frequency, ``n / (K · n_c)``), ``sqrt`` (inverse square root of the frequency) or ``enet``
    (``1 / ln(1.02 + n_c / n)``, bounded; Paszke et al. 2016)
    (:func:`geolesf.methods.unet.objectives.class_weights`). For a rare class such as buildings on 4 % of a scene."""


CONFIG = SegmentationConfig = run_config_class(
    "SegmentationConfig", task="segmentation", out="runs/segmentation", model=SegModelConfig, data=SegDataConfig,
    trainer=SegTrainerConfig, module=__name__,
)


def _check(cfg: SegmentationConfig) -> None:
    if cfg.model.name != "unet":
        raise ConfigError(f"model.name: the segmentation task trains 'unet', found '{cfg.model.name}'")
    for key in ("image", "labels"):
        value = getattr(cfg.data, key)
        if not value:
            raise ConfigError(f"data.{key} is required for the segmentation task")
        if not Path(value).is_file():
            raise DataError(f"data.{key}: {value}: file not found")
    t = cfg.trainer
    for key in ("epochs", "steps_per_epoch", "chip", "batch_size"):
        if getattr(t, key) < 1:
            raise ConfigError(f"trainer.{key} must be at least 1, found {getattr(t, key)}")
    if t.lr_schedule not in ("constant", "cosine"):
        raise ConfigError(f"trainer.lr_schedule must be 'constant' or 'cosine', found '{t.lr_schedule}'")
    if t.chip_sampling not in ("uniform", "balanced"):
        raise ConfigError(f"trainer.chip_sampling must be 'uniform' or 'balanced', found '{t.chip_sampling}'")
    if t.class_weights not in CLASS_WEIGHTS:
        raise ConfigError(f"trainer.class_weights must be one of {', '.join(CLASS_WEIGHTS)}, found '{t.class_weights}'")


def run_config(cfg: SegmentationConfig) -> Path:
    """Train ``unet`` as configured; returns the run folder (``config.yaml`` written first)."""
    import dataclasses

    from geolesf.data.sources import resolve_data
    from geolesf.methods.unet.objectives import make_objective

    given = cfg
    cfg = dataclasses.replace(cfg, data=resolve_data(cfg.data))  # dataset names → local files
    _check(cfg)
    objective = make_objective(cfg.data)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_yaml(out / "config.yaml", given)
    read = objective.read_labels(cfg.data, out)
    t = cfg.trainer
    ids = sorted(int(k) for k in cfg.data.class_names) if cfg.data.class_names and cfg.data.supervision != "mask" \
        else None
    summary = train_segmenter(
        cfg.data.image, read.labels, out / "model.pt", class_names=read.class_names, colors=cfg.data.colors,
        ignore_value=read.ignore_value, model_args=cfg.model.args, epochs=t.epochs,
        steps_per_epoch=t.steps_per_epoch, chip=t.chip, batch_size=t.batch_size, lr=t.lr, seed=t.seed,
        device=t.device, lr_schedule=t.lr_schedule, objective=objective, extra_rasters=read.extra, class_ids=ids,
        class_weights=t.class_weights, chip_sampling=t.chip_sampling,
    )
    metrics = {"checkpoint": "model.pt", "sha256": summary["sha256"], "history": summary["history"],
               "class_ids": summary["class_ids"], "supervision": {**objective.report(), **read.report}}
    metrics.update(_run_metrics(cfg, out, read))
    write_json(out / "metrics.json", metrics)
    fit = metrics["training_scene_fit"]
    print(f"[unet] loss {summary['history'][0]['loss']:.4f} → {summary['history'][-1]['loss']:.4f}, "
          f"training-scene mIoU {fit['mIoU']:.4f} (against the {objective.name} labels) → {out}")
    for key in ("eval_labels", "test"):
        if key in metrics:
            print(f"[unet] {key} mIoU {metrics[key]['mIoU']:.4f}")
    return out


def _full_labels(spec: str, image: str, cfg: SegmentationConfig, dest: Path) -> Path:
    """Evaluation labels as a raster on ``image``'s grid (vector layers burnt as the mask labels are)."""
    from geolesf.methods.unet.objectives import class_lookup

    if not Path(spec).is_file():
        raise DataError(f"{spec}: file not found")
    if Path(spec).suffix.lower() not in VECTOR_SUFFIXES:
        return Path(spec)
    return burn_to_raster(spec, image, dest, field_name=cfg.data.eval_label_field, background=cfg.data.background,
                          all_touched=cfg.data.all_touched, name_to_id=class_lookup(cfg.data.class_names))[0]


def _run_metrics(cfg: SegmentationConfig, out: Path, read: Any) -> dict[str, Any]:
    """The training scene's class map (``classmap.tif`` + ``.qml``) and its metrics; the test region's."""
    import tempfile

    from geolesf.methods.unet.evaluate import map_metrics, predict_map
    from geolesf.predict.model import load_predict_model

    d, dev = cfg.data, cfg.trainer.device
    pm = load_predict_model(out / "model.pt")
    classmap = predict_map(pm, d.image, out / "classmap.tif", device=dev)
    res: dict[str, Any] = {"classmap": classmap.name, "training_scene_fit": map_metrics(
        classmap, read.labels, pm.class_ids, pm.class_names, ignore_value=read.ignore_value),
        "note": "training_scene_fit is measured on the training labels themselves (fit, not generalisation)"}
    with tempfile.TemporaryDirectory() as tmp:
        if d.eval_labels:
            truth = _full_labels(d.eval_labels, d.image, cfg, Path(tmp) / "eval.tif")
            res["eval_labels"] = map_metrics(classmap, truth, pm.class_ids, pm.class_names, ignore_value=None)
            res["eval_labels"]["labels"] = str(d.eval_labels)
        if d.test_image or d.test_labels:
            if not (d.test_image and d.test_labels):
                raise ConfigError("data.test_image and data.test_labels go together (a separate region and its labels)")
            truth = _full_labels(d.test_labels, d.test_image, cfg, Path(tmp) / "test.tif")
            pred = predict_map(pm, d.test_image, Path(tmp) / "test_pred.tif", device=dev, qml=False)
            res["test"] = map_metrics(pred, truth, pm.class_ids, pm.class_names, ignore_value=None)
            res["test"].update(image=str(d.test_image), labels=str(d.test_labels))
    return res


def _read_pair(image_tif: str | Path, label_tif: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    import rasterio

    for p in (image_tif, label_tif):
        if not Path(p).is_file():
            raise DataError(f"{p}: file not found")
    with rasterio.open(image_tif) as src:
        image = src.read().astype(np.float32)
        valid = src.dataset_mask() > 0
    with rasterio.open(label_tif) as lab:
        labels = lab.read(1)
        label_nodata = lab.nodata
    if image.shape[1:] != labels.shape:
        raise DataError(f"{label_tif} is {labels.shape[1]}×{labels.shape[0]} px; "
                        f"{image_tif} is {image.shape[2]}×{image.shape[1]}")
    return image, labels, valid, label_nodata


def _random_chips(
    rng: np.random.Generator, x_all: np.ndarray, rasters: dict[str, np.ndarray], c: int, batch_size: int, device: str,
    anchors: np.ndarray | list[np.ndarray] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``batch_size`` random ``c``×``c`` chips of the normalised image and of every raster (same windows).

    With ``anchors`` (flat pixel indices), each chip holds a random anchor at a random place in the chip;
    with a list of such arrays (one per class), each chip first draws one array uniformly, then its anchor.
    """
    h, w = rasters["target"].shape
    if isinstance(anchors, list):
        groups = rng.integers(0, len(anchors), batch_size)
        anchors = np.array([rng.choice(anchors[g]) for g in groups], dtype=np.int64)
        ay, ax = np.divmod(anchors, w)
        ys = np.clip(ay - rng.integers(0, c, batch_size), 0, h - c)
        xs = np.clip(ax - rng.integers(0, c, batch_size), 0, w - c)
    elif anchors is not None and anchors.size:
        ay, ax = np.divmod(rng.choice(anchors, batch_size), w)
        ys = np.clip(ay - rng.integers(0, c, batch_size), 0, h - c)
        xs = np.clip(ax - rng.integers(0, c, batch_size), 0, w - c)
    else:
        ys = rng.integers(0, h - c + 1, batch_size)
        xs = rng.integers(0, w - c + 1, batch_size)
    xb = torch.from_numpy(np.stack([x_all[:, y:y + c, x:x + c] for y, x in zip(ys, xs)])).to(device)
    chips = {k: torch.from_numpy(np.stack([r[y:y + c, x:x + c] for y, x in zip(ys, xs)])).to(device)
             for k, r in rasters.items()}
    return xb, chips


def _anchors(target: np.ndarray, at_labels: bool, sampling: str) -> np.ndarray | list[np.ndarray] | None:
    """Chip anchors: per labelled class (``balanced``), any labelled pixel (sparse labels) or None (uniform)."""
    if sampling == "balanced":
        groups = [np.flatnonzero(target == k) for k in np.unique(target[target != IGNORE])]
        return [g for g in groups if g.size] or None
    return np.flatnonzero(target != IGNORE) if at_labels else None


def _fit(model: torch.nn.Module, objective: Any, state: Any, *, epochs: int, steps_per_epoch: int,
         batch_size: int, lr: float, rng: np.random.Generator, schedule: str = "constant") -> list[dict[str, float]]:
    """The training loop: random chips, the objective's loss, its per-epoch hook; returns the history."""
    from tqdm.auto import tqdm

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    total_steps = max(1, epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, (lambda k: 0.5 * (1 + np.cos(np.pi * min(k, total_steps) / total_steps))) if schedule == "cosine"
        else (lambda k: 1.0))
    history = []
    bar = tqdm(range(epochs), desc=f"train unet ({objective.name})", unit="epoch", dynamic_ncols=True)
    objective.on_epoch_end(0, state)  # epoch 0: before training (schedules start here)
    for epoch in bar:
        model.train()
        total, sums = 0.0, {}
        anchors = _anchors(state.rasters["target"], objective.chips_at_labels, state.chip_sampling)
        for _ in range(steps_per_epoch):
            xb, chips = _random_chips(rng, state.image, state.rasters, state.chip, batch_size, state.device, anchors)
            if objective.needs_labels and (chips["target"] == IGNORE).all():
                continue
            loss, stats = objective.loss(model(objective.student_input(xb)), xb, chips)
            opt.zero_grad()
            loss.backward()
            opt.step()
            objective.after_step(model)
            sched.step()
            total += loss.item()
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
        history.append({"epoch": epoch + 1, "loss": total / steps_per_epoch,
                        **{k: v / steps_per_epoch for k, v in sums.items()}})
        model.eval()
        objective.on_epoch_end(epoch + 1, state)
        bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
    model.eval()
    return history


def _targets(image_tif: Any, label_tif: Any, ignore_value: int | None,
             class_ids: list[int] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Image, valid mask, per-pixel class index (:data:`IGNORE` where unlabelled) and the class ids."""
    image, labels, valid, label_nodata = _read_pair(image_tif, label_tif)
    ignore = label_nodata if ignore_value is None else ignore_value
    usable = valid & (labels != ignore) if ignore is not None else valid
    found = [int(v) for v in np.unique(labels[usable])]
    if class_ids is None:
        class_ids = found
    elif set(found) - set(class_ids):
        raise DataError(f"{label_tif}: label values {sorted(set(found) - set(class_ids))} are not among the "
                        f"classes of data.class_names {class_ids}")
    if len(class_ids) < 2:
        raise DataError(f"{label_tif}: need at least 2 classes to train, found {class_ids}")
    lut = np.full(max(int(labels.max()), max(class_ids)) + 1, IGNORE, dtype=np.int64)
    lut[class_ids] = np.arange(len(class_ids))
    target = np.where(usable, lut[labels], IGNORE)
    return image, valid, target, list(class_ids)


def _pixel_size(image_tif: str | Path) -> dict[str, float]:
    """``{"pixel_size_m": x}`` of a scene with a projected CRS in metres and (within 0.1 %) square pixels, else
    ``{}``: the resolution an ONNX export gives Deepness (:mod:`geolesf.export.onnx`); x is the mean side."""
    import rasterio

    with rasterio.open(image_tif) as src:
        crs, (xres, yres) = src.crs, src.res
    if crs is None or not crs.is_projected or abs(xres - yres) > 1e-3 * xres:
        return {}
    units = (crs.linear_units or "").lower()
    return {"pixel_size_m": float(xres + yres) / 2} if units in ("metre", "meter", "m", "metres", "meters") else {}


def train_segmenter(
    image_tif: str | Path,
    label_tif: str | Path,
    out: str | Path,
    *,
    class_names: dict[int, str] | None = None,
    colors: dict[int, Any] | None = None,
    ignore_value: int | None = None,
    model_args: dict[str, Any] | None = None,
    epochs: int = 10,
    steps_per_epoch: int = 20,
    chip: int = 128,
    batch_size: int = 8,
    lr: float = 2e-3,
    seed: int = 0,
    device: str = "cpu",
    lr_schedule: str = "constant",
    objective: Any = None,
    extra_rasters: dict[str, np.ndarray] | None = None,
    class_ids: list[int] | None = None,
    class_weights: str = "none",
    chip_sampling: str = "uniform",
) -> dict[str, Any]:
    """Train ``unet`` on random chips of one image/label GeoTIFF pair; write a checkpoint.

    ``ignore_value`` (default: the label raster's nodata) marks unlabelled pixels; image
    nodata pixels are ignored too. Class ids are the remaining label values, or ``class_ids``
    (sparse labels: classes may be given that few pixels carry). ``objective`` (default: full-mask
    cross-entropy) gives the loss and the per-epoch hook; ``extra_rasters`` are cropped with the target.
    ``class_weights`` (``none``, ``balanced``, ``sqrt``, ``enet``): the objective's cross-entropy class weights, from the
    labelled pixels of the whole scene (:func:`~geolesf.methods.unet.objectives.class_weights`);
    ``chip_sampling``: ``balanced`` centres each chip's anchor on a pixel of a uniformly drawn labelled class.
    Returns a summary dict with the checkpoint path, its sha256 and the loss history.
    """
    from geolesf.colors import default_palette
    from geolesf.methods.unet.objectives import MaskObjective, TrainState
    from geolesf.methods.unet.objectives import class_weights as weights_of

    objective = objective or MaskObjective()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    image, valid, target, class_ids = _targets(image_tif, label_tif, ignore_value, class_ids)
    pix = image[:, valid]
    mean, std = pix.mean(axis=1), pix.std(axis=1) + 1e-6
    x_all = (image - mean[:, None, None]) / std[:, None, None]
    x_all[:, ~valid] = 0.0
    bands, h, w = image.shape
    args = {"in_chans": bands, "num_classes": len(class_ids), "base": 16, "depth": 3, **(model_args or {})}
    model = unet(**args).to(device)
    div = getattr(model, "size_divisor", 1)
    c = min(chip, h, w)
    c = max(div, c - c % div)
    rasters = {"target": target, "valid": valid, **(extra_rasters or {})}
    weights = weights_of(target, len(class_ids), class_weights)
    objective.class_weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float32,
                                                                            device=device)
    state = TrainState(model, x_all.astype(np.float32), rasters, class_ids, device=device, chip=c, epochs=epochs,
                       chip_sampling=chip_sampling)
    start = time.perf_counter()
    history = _fit(model, objective, state, epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size,
                   lr=lr, rng=rng, schedule=lr_schedule)
    names = class_names or {}
    palette = default_palette(len(class_ids))
    cols = colors or {}
    ckpt = SegmentationCheckpoint(
        model=model.cpu(), model_name="unet", model_args=args, band_mean=mean, band_std=std,
        class_ids=class_ids, class_names=[names.get(i, f"class {i}") for i in class_ids],
        colors=[cols.get(i, palette[k]) for k, i in enumerate(class_ids)],
        extra={"trained_on": Path(image_tif).name, "labels": Path(label_tif).name, "epochs": epochs,
               "chip": c, "seconds": round(time.perf_counter() - start, 2), "supervision": objective.name,
               "class_weights": None if weights is None else [round(float(v), 6) for v in weights],
               "chip_sampling": chip_sampling,
               **_pixel_size(image_tif)},
    )
    digest = save(out, ckpt)
    return {"checkpoint": Path(out), "sha256": digest, "history": history, "class_ids": class_ids}
