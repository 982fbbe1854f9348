"""The end of an hsi run: classify what the run needs and write the whole-scene class map.

``trainer.scene_map: true`` (the default) classifies every pixel of the scene, scores the test
pixels and writes ``classmap.tif`` + ``preview.png``. ``false`` (``geolesf train --no-scene-map``)
classifies the test pixels alone when the predictor can (``classify_pixels``; both geolesf trainers
can) and writes no class map: the metrics are the same, the time is that of the test pixels.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.errors import DataError, ModelError


def predict_for_run(predictor: Any, scene: Any, scene_map: bool) -> tuple[np.ndarray | None, np.ndarray, float]:
    """``(whole-scene class indices or None, test-pixel class indices, seconds)``.

    Test pixels are in row-major order (that of ``array[scene.split.test]``).
    """
    test = scene.split.test
    t0 = time.perf_counter()
    if not scene_map and hasattr(predictor, "classify_pixels"):
        rows, cols = np.nonzero(test)
        pred_test = np.asarray(predictor.classify_pixels(scene, rows, cols))
        if pred_test.shape != rows.shape:
            raise ModelError(f"predictor returned {pred_test.shape} classes for {rows.size} test pixels")
        return None, pred_test, time.perf_counter() - t0
    pred = np.asarray(predictor.predict_scene(scene))
    seconds = time.perf_counter() - t0
    if pred.shape != scene.shape:
        raise ModelError(f"predictor returned shape {pred.shape}; expected {scene.shape}")
    return (pred if scene_map else None), pred[test], seconds


def class_map_ids(scene: Any, pred: np.ndarray, mask_unlabelled: bool) -> np.ndarray:
    """Class indices → original label ids (uint8); 0 on unlabelled pixels when asked."""
    ids = np.asarray(scene.class_ids, dtype=np.int64)
    if ids.max() > 255:
        raise DataError(f"class id {ids.max()} does not fit a uint8 class map")
    out = ids[pred].astype(np.uint8)
    if mask_unlabelled:
        out[scene.y < 0] = 0
    return out


def write_scene_map(out_dir: Path, scene: Any, cfg: Any, pred: np.ndarray, metrics: dict[str, Any]) -> None:
    """``classmap.tif`` (original ids, colour table, names, provenance tags) and ``preview.png``."""
    from geolesf.io.cube import wavelength_tags
    from geolesf.io.writers import write_class_map, write_preview_png

    names = {0: "unlabelled", **dict(zip(scene.class_ids, scene.class_names))}
    colors = {0: (0, 0, 0), **dict(zip(scene.class_ids, scene.class_colors))}
    cmap = class_map_ids(scene, pred, cfg.data.mask_unlabelled)
    if getattr(scene.cube, "valid", None) is not None:
        cmap[~scene.cube.valid] = 0  # nodata / quality-flagged pixels of a sensor product: not classified
    crs = scene.cube.crs if scene.cube.crs is not None else scene.ground_truth.crs
    transform = scene.cube.transform if scene.cube.crs is not None else scene.ground_truth.transform
    tags = {"model": cfg.model.name, "split": scene.split.name, "seed": cfg.trainer.seed,
            "cube_sha256": scene.info["cube"].get("sha256", ""), "OA": round(metrics["OA"], 6),
            **wavelength_tags(scene.cube.wavelengths)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        write_class_map(out_dir / "classmap.tif", cmap, names, colors, crs=crs, transform=transform,
                        nodata=0, tags={**tags, "geolesf_version": metrics["machine"]["geolesf"]})
    title = (f"{cfg.model.name} · split {scene.split.name} · OA {metrics['OA']:.4f} "
             f"AA {metrics['AA']:.4f} κ {metrics['kappa']:.4f}")
    write_preview_png(out_dir / "preview.png", cmap, names, colors, title=title)
