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

trains on random chips (:func:`geolesf.methods.unet.model.train_segmenter`) and writes into ``out``:
``model.pt`` (``geolesf-segmentation/1``), ``labels.tif`` when labels were rasterised,
``metrics.json`` (loss history and the *training-scene* fit: mIoU, per-class IoU — the scene is
the training data, so this measures fit, not generalisation; evaluate on another scene with
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
from torch.nn import functional as F

from geolesf.config import ModelConfig
from geolesf.config import run_config_class
from geolesf.errors import ConfigError, DataError
from geolesf.io.labels import VECTOR_SUFFIXES, burn_to_raster
from geolesf.methods.unet.checkpoint import SegmentationCheckpoint, save
from geolesf.methods.unet.evaluate import scene_metrics
from geolesf.methods.unet.model import unet
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
    seed: int = 0
    device: str = "cpu"


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


def run_config(cfg: SegmentationConfig) -> Path:
    """Train ``unet`` as configured; returns the run folder (``config.yaml`` written first)."""
    import dataclasses

    from geolesf.data.sources import resolve_data

    given = cfg
    cfg = dataclasses.replace(cfg, data=resolve_data(cfg.data))  # dataset names → local files
    _check(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_yaml(out / "config.yaml", given)
    labels, class_names = Path(cfg.data.labels), cfg.data.class_names
    if labels.suffix.lower() in VECTOR_SUFFIXES:
        known = {v: int(k) for k, v in (class_names or {}).items()}
        labels, burned = burn_to_raster(labels, cfg.data.image, out / "labels.tif", field_name=cfg.data.label_field,
                                        background=cfg.data.background, all_touched=cfg.data.all_touched,
                                        name_to_id=known or None)
        class_names = {**burned.names, **(class_names or {})}
        for line in burned.notes():
            print(f"note: {line}")
        print(f"rasterised {cfg.data.labels} onto {Path(cfg.data.image).name} → {labels}")
    t = cfg.trainer
    summary = train_segmenter(
        cfg.data.image, labels, out / "model.pt", class_names=class_names, colors=cfg.data.colors,
        ignore_value=cfg.data.ignore_value, model_args=cfg.model.args, epochs=t.epochs,
        steps_per_epoch=t.steps_per_epoch, chip=t.chip, batch_size=t.batch_size, lr=t.lr, seed=t.seed,
        device=t.device,
    )
    fit = scene_metrics(out / "model.pt", cfg.data.image, labels, ignore_value=cfg.data.ignore_value,
                        device=t.device)
    metrics = {"checkpoint": "model.pt", "sha256": summary["sha256"], "history": summary["history"],
               "class_ids": summary["class_ids"], "training_scene_fit": fit,
               "note": "training_scene_fit is measured on the training scene itself (fit, not generalisation)"}
    write_json(out / "metrics.json", metrics)
    print(f"[unet] loss {summary['history'][0]['loss']:.4f} → {summary['history'][-1]['loss']:.4f}, "
          f"training-scene mIoU {fit['mIoU']:.4f} → {out}")
    return out


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
    rng: np.random.Generator, x_all: np.ndarray, target: np.ndarray, c: int, batch_size: int, device: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random ``c``×``c`` chips of the normalised image and their targets."""
    h, w = target.shape
    ys = rng.integers(0, h - c + 1, batch_size)
    xs = rng.integers(0, w - c + 1, batch_size)
    xb = torch.from_numpy(np.stack([x_all[:, y:y + c, x:x + c] for y, x in zip(ys, xs)])).to(device)
    yb = torch.from_numpy(np.stack([target[y:y + c, x:x + c] for y, x in zip(ys, xs)])).to(device)
    return xb, yb


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
) -> dict[str, Any]:
    """Train ``unet`` on random chips of one image/label GeoTIFF pair; write a checkpoint.

    ``ignore_value`` (default: the label raster's nodata) marks unlabelled pixels; image
    nodata pixels are ignored too. Class ids are the remaining label values. Returns a summary
    dict with the checkpoint path, its sha256 and the loss history.
    """
    from geolesf.colors import default_palette

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    image, labels, valid, label_nodata = _read_pair(image_tif, label_tif)
    ignore = label_nodata if ignore_value is None else ignore_value
    usable = valid & (labels != ignore) if ignore is not None else valid
    class_ids = [int(v) for v in np.unique(labels[usable])]
    if len(class_ids) < 2:
        raise DataError(f"{label_tif}: need at least 2 classes to train, found {class_ids}")
    lut = np.full(int(labels.max()) + 1, -100, dtype=np.int64)
    lut[class_ids] = np.arange(len(class_ids))
    target = np.where(usable, lut[labels], -100)
    pix = image[:, valid]
    mean, std = pix.mean(axis=1), pix.std(axis=1) + 1e-6
    x_all = (image - mean[:, None, None]) / std[:, None, None]
    x_all[:, ~valid] = 0.0
    bands, h, w = image.shape
    c = min(chip, h, w)
    args = {"in_chans": bands, "num_classes": len(class_ids), "base": 16, "depth": 3, **(model_args or {})}
    model = unet(**args).to(device)
    div = getattr(model, "size_divisor", 1)
    c = max(div, c - c % div)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    start = time.perf_counter()
    from tqdm.auto import tqdm

    model.train()
    bar = tqdm(range(epochs), desc="train unet", unit="epoch", dynamic_ncols=True)
    for epoch in bar:
        total = 0.0
        for _ in range(steps_per_epoch):
            xb, yb = _random_chips(rng, x_all, target, c, batch_size, device)
            if (yb == -100).all():
                continue
            loss = F.cross_entropy(model(xb), yb, ignore_index=-100)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        history.append({"epoch": epoch + 1, "loss": total / steps_per_epoch})
        bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
    model.eval()
    names = class_names or {}
    palette = default_palette(len(class_ids))
    cols = colors or {}
    ckpt = SegmentationCheckpoint(
        model=model.cpu(), model_name="unet", model_args=args, band_mean=mean, band_std=std,
        class_ids=class_ids, class_names=[names.get(i, f"class {i}") for i in class_ids],
        colors=[cols.get(i, palette[k]) for k, i in enumerate(class_ids)],
        extra={"trained_on": Path(image_tif).name, "labels": Path(label_tif).name, "epochs": epochs,
               "chip": c, "seconds": round(time.perf_counter() - start, 2), **_pixel_size(image_tif)},
    )
    digest = save(out, ckpt)
    return {"checkpoint": Path(out), "sha256": digest, "history": history, "class_ids": class_ids}
