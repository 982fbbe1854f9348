"""``geolesf evaluate`` of a unet checkpoint: mIoU of the tiled prediction of a scene against its labels."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.errors import ConfigError, DataError
from geolesf.io.labels import VECTOR_SUFFIXES, rasterize_labels


def scene_metrics(checkpoint: str | Path, image: str | Path, labels: str | Path, *, ignore_value: int | None,
                  device: str = "cpu", batch_size: int = 16, map_out: str | Path | None = None) -> dict[str, Any]:
    """mIoU of ``checkpoint`` on ``image`` against the label raster ``labels`` (tiled prediction).

    With ``map_out`` the predicted class map is kept there (a COG with its ``.qml``), else it is temporary.
    """
    from geolesf.predict.model import load_predict_model

    pm = load_predict_model(checkpoint)
    if map_out is not None:
        predict_map(pm, image, map_out, device=device, batch_size=batch_size)
        return map_metrics(map_out, labels, pm.class_ids, pm.class_names, ignore_value=ignore_value)
    with tempfile.TemporaryDirectory() as tmp:
        pred = predict_map(pm, image, Path(tmp) / "pred.tif", device=device, batch_size=batch_size, qml=False)
        return map_metrics(pred, labels, pm.class_ids, pm.class_names, ignore_value=ignore_value)


def predict_map(pm: Any, image: str | Path, out: str | Path, *, device: str = "cpu", batch_size: int = 16,
                qml: bool = True) -> Path:
    """Tiled prediction of ``image`` with the loaded model ``pm`` into the class-map COG ``out``."""
    from geolesf.predict.tiled import predict_raster

    res = predict_raster(image, pm, out, batch_size=batch_size, device=device, progress=False, qml=qml)
    return Path(res.out)


def map_metrics(pred_tif: str | Path, labels: str | Path, class_ids: Any, class_names: Any, *,
                ignore_value: int | None) -> dict[str, Any]:
    """Confusion-matrix metrics (mIoU, per-class IoU, …) of a class map against a label raster on its grid."""
    import rasterio

    from geolesf.metrics.segmentation import SegmentationConfusion

    with rasterio.open(pred_tif) as src:
        pred, pred_nd = src.read(1), src.nodata
    with rasterio.open(labels) as lab:
        truth, lab_nd = lab.read(1), lab.nodata
    if truth.shape != pred.shape:
        raise DataError(f"{labels} is {truth.shape[1]}×{truth.shape[0]} px; the predicted map is "
                        f"{pred.shape[1]}×{pred.shape[0]}")
    ignore = lab_nd if ignore_value is None else ignore_value
    ids = list(class_ids)
    lut = np.full(max(256, int(truth.max()) + 1, int(pred.max()) + 1), -1, dtype=np.int64)
    lut[ids] = np.arange(len(ids))
    keep = (lut[truth] >= 0) & (pred != pred_nd) & (truth != ignore if ignore is not None else True)
    conf = SegmentationConfusion(len(ids), ignore_index=None)
    conf.update(lut[truth][keep], lut[pred][keep])
    return conf.compute(list(class_names))


def evaluate(request: Any) -> dict[str, Any]:
    """``geolesf evaluate --checkpoint model.pt --option image=SCENE.tif --option labels=LABELS.tif``."""
    checkpoint, out, device, options = request.checkpoint, request.out, request.device, request.options
    dataset, what, batch_size = request.dataset, request.what, request.batch_size
    from geolesf.io.atomic import atomic_path

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
