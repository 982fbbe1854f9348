"""Task ``segmentation``: train a dense segmenter (``unet``) on a GeoTIFF and its labels.

``geolesf train --config configs/segmentation/unet_spacenet_buildings.yaml`` reads

- ``data.image``: any raster rasterio opens (its mask / nodata marks unusable pixels);
- ``data.labels``: either a label raster on the same grid (class ids; its nodata, or
  ``data.ignore_value``, marks unlabelled pixels) or a vector file (GeoPackage, GeoJSON,
  shapefile) whose features are burnt onto the image grid — value ``data.label_field`` of each
  feature, or 1 for every feature when no field is named; pixels outside every feature get
  ``data.background`` (default 0, i.e. "not a building" for footprints);

trains on random chips (:func:`geolesf.models.unet.train_segmenter`) and writes into ``out``:
``model.pt`` (``geolesf-segmentation/1``), ``labels.tif`` when labels were rasterised,
``metrics.json`` (loss history and the *training-scene* fit: mIoU, per-class IoU — the scene is
the training data, so this measures fit, not generalisation; evaluate on another scene with
``geolesf evaluate --checkpoint model.pt --option image=… --option labels=…``) and ``config.yaml``.
The checkpoint predicts any scene with ``geolesf predict scene.tif --checkpoint run/model.pt``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.errors import ConfigError, DataError


@dataclass
class SegDataConfig:
    image: str | None = None
    """Input raster (GeoTIFF or anything rasterio opens)."""
    labels: str | None = None
    """Label raster on the image grid, or a vector file rasterised onto it."""
    label_field: str | None = None
    """Vector labels: attribute holding integer class ids (default: every feature is class 1)."""
    background: int = 0
    """Vector labels: class id of pixels outside every feature."""
    ignore_value: int | None = None
    """Label value of unlabelled pixels (default: the label raster's nodata)."""
    class_names: dict[int, str] | None = None
    colors: dict[int, str] | None = None


@dataclass
class SegModelConfig:
    name: str = "unet"
    args: dict[str, Any] = field(default_factory=dict)
    """Constructor arguments (``in_chans`` and ``num_classes`` are filled in)."""


@dataclass
class SegTrainerConfig:
    epochs: int = 10
    steps_per_epoch: int = 20
    chip: int = 128
    batch_size: int = 8
    lr: float = 2e-3
    seed: int = 0
    device: str = "cpu"


@dataclass
class SegmentationConfig:
    task: str = "segmentation"
    out: str = "runs/segmentation"
    model: SegModelConfig = field(default_factory=SegModelConfig)
    data: SegDataConfig = field(default_factory=SegDataConfig)
    trainer: SegTrainerConfig = field(default_factory=SegTrainerConfig)


CONFIG = SegmentationConfig
VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".kml")


def rasterize_labels(vector: str | Path, image: str | Path, out: str | Path, *, field_name: str | None,
                     background: int) -> Path:
    """Burn ``vector`` onto the grid of ``image`` (reprojected to its CRS); write a uint8 GeoTIFF."""
    import geopandas as gpd
    import rasterio
    from rasterio.features import rasterize

    from geolesf.io.writers import atomic_path

    try:
        gdf = gpd.read_file(vector)
    except Exception as exc:  # fiona/pyogrio raise many types for unreadable files
        raise DataError(f"{vector}: not a readable vector file ({exc.__class__.__name__})") from None
    with rasterio.open(image) as src:
        crs, transform, shape = src.crs, src.transform, (src.height, src.width)
    if crs is None:
        raise DataError(f"{image}: has no CRS; vector labels cannot be placed on it")
    if gdf.crs is None:
        raise DataError(f"{vector}: has no CRS")
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty].to_crs(crs)
    if field_name is not None:
        if field_name not in gdf.columns:
            raise ConfigError(f"data.label_field: {vector} has no column '{field_name}' "
                              f"(columns: {', '.join(c for c in gdf.columns if c != 'geometry')})")
        values = gdf[field_name].astype(int).to_numpy()
    else:
        values = np.ones(len(gdf), dtype=int)
    if len(values) and (values.min() < 0 or values.max() > 254):
        raise DataError(f"{vector}: class ids must be within 0..254")
    if not 0 <= background <= 254:
        raise ConfigError(f"data.background must be within 0..254, found {background}")
    if len(values):
        burnt = rasterize(list(zip(gdf.geometry, values.tolist())), out_shape=shape, transform=transform,
                          fill=background, dtype="uint8")
    else:
        burnt = np.full(shape, background, np.uint8)
    profile = {"driver": "GTiff", "height": shape[0], "width": shape[1], "count": 1, "dtype": "uint8",
               "crs": crs, "transform": transform, "nodata": 255, "compress": "deflate"}
    with atomic_path(out) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(burnt, 1)
    return Path(out)


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


def scene_metrics(checkpoint: str | Path, image: str | Path, labels: str | Path, *, ignore_value: int | None,
                  device: str = "cpu", batch_size: int = 16) -> dict[str, Any]:
    """mIoU of ``checkpoint`` on ``image`` against the label raster ``labels`` (tiled prediction)."""
    import rasterio

    from geolesf.metrics.segmentation import SegmentationConfusion
    from geolesf.predict.tiled import load_predict_model, predict_raster

    pm = load_predict_model(checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        res = predict_raster(image, pm, Path(tmp) / "pred.tif", batch_size=batch_size, device=device,
                             progress=False, qml=False)
        with rasterio.open(res.out) as src:
            pred, pred_nd = src.read(1), src.nodata
    with rasterio.open(labels) as lab:
        truth, lab_nd = lab.read(1), lab.nodata
    if truth.shape != pred.shape:
        raise DataError(f"{labels} is {truth.shape[1]}×{truth.shape[0]} px; {image} is "
                        f"{pred.shape[1]}×{pred.shape[0]}")
    ignore = lab_nd if ignore_value is None else ignore_value
    ids = list(pm.class_ids)
    lut = np.full(max(256, int(truth.max()) + 1, int(pred.max()) + 1), -1, dtype=np.int64)
    lut[ids] = np.arange(len(ids))
    keep = (lut[truth] >= 0) & (pred != pred_nd) & (truth != ignore if ignore is not None else True)
    conf = SegmentationConfusion(len(ids), ignore_index=None)
    conf.update(lut[truth][keep], lut[pred][keep])
    return conf.compute(pm.class_names)


def run_config(cfg: SegmentationConfig) -> Path:
    """Train ``unet`` as configured; returns the run folder."""
    from geolesf.config import to_dict
    from geolesf.models.unet import train_segmenter

    _check(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    labels = Path(cfg.data.labels)
    if labels.suffix.lower() in VECTOR_SUFFIXES:
        labels = rasterize_labels(labels, cfg.data.image, out / "labels.tif", field_name=cfg.data.label_field,
                                  background=cfg.data.background)
        print(f"rasterised {cfg.data.labels} onto {Path(cfg.data.image).name} → {labels}")
    t = cfg.trainer
    summary = train_segmenter(
        cfg.data.image, labels, out / "model.pt", class_names=cfg.data.class_names, colors=cfg.data.colors,
        ignore_value=cfg.data.ignore_value, model_args=cfg.model.args, epochs=t.epochs,
        steps_per_epoch=t.steps_per_epoch, chip=t.chip, batch_size=t.batch_size, lr=t.lr, seed=t.seed,
        device=t.device,
    )
    fit = scene_metrics(out / "model.pt", cfg.data.image, labels, ignore_value=cfg.data.ignore_value,
                        device=t.device)
    metrics = {"checkpoint": "model.pt", "sha256": summary["sha256"], "history": summary["history"],
               "class_ids": summary["class_ids"], "training_scene_fit": fit,
               "note": "training_scene_fit is measured on the training scene itself (fit, not generalisation)"}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    import yaml

    (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    print(f"[unet] loss {summary['history'][0]['loss']:.4f} → {summary['history'][-1]['loss']:.4f}, "
          f"training-scene mIoU {fit['mIoU']:.4f} → {out}")
    return out


def evaluate(checkpoint: str, *, dataset: str | None, data_root: str | None, what: str | None, out: str | None,
             device: str, batch_size: int | None, options: dict[str, Any]) -> dict[str, Any]:
    """``geolesf evaluate --checkpoint model.pt --option image=SCENE.tif --option labels=LABELS.tif``."""
    from geolesf.io.writers import atomic_path

    if dataset or what:
        raise ConfigError("--dataset/--what: a unet checkpoint is evaluated on a scene: "
                          "--option image=SCENE.tif --option labels=LABELS.tif")
    image, labels = options.get("image"), options.get("labels")
    if not image or not labels:
        raise ConfigError("unet checkpoints need --option image=SCENE.tif --option labels=LABELS.tif")
    for p in (image, labels):
        if not Path(p).is_file():
            raise DataError(f"{p}: file not found")
    with tempfile.TemporaryDirectory() as tmp:
        if Path(labels).suffix.lower() in VECTOR_SUFFIXES:
            labels = rasterize_labels(labels, image, Path(tmp) / "labels.tif",
                                      field_name=options.get("label_field"), background=options.get("background", 0))
        m = scene_metrics(checkpoint, image, labels, ignore_value=options.get("ignore_value"), device=device,
                          batch_size=batch_size or 16)
    dest = Path(out) if out else Path(str(checkpoint)).with_name("evaluation.json")
    with atomic_path(dest) as tmp_path:
        Path(tmp_path).write_text(json.dumps(m, indent=2))
    m["written_to"] = str(dest)
    m["summary"] = f"mIoU {m['mIoU']:.4f}  pixel accuracy {m['pixel_accuracy']:.4f}  ({m['pixels']:,} px)"
    return m
