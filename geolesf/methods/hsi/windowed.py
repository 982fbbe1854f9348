"""The hsi run on a scene read through windows (``data.windowed``; see :mod:`geolesf.data.windowed`).

After :func:`geolesf.methods.hsi.train.prepare_scene` returned a scene whose ``features`` is a
:class:`~geolesf.data.windowed.FeatureWindows`, nothing holds the whole cube:

- :func:`scene_gatherer` — the patch source of the ``pixel`` trainer: in memory a
  :class:`~geolesf.predict.patches.PatchGatherer`; windowed a
  :class:`~geolesf.data.windowed.WindowedPatches` with the training pixels' patches preloaded
  (refused over the array budget), every other pixel read band by band.
- :func:`test_predictions` — the test pixels' classes, read through windows in row-major order.
- :func:`finish_windowed` — ``config.yaml``, ``metrics.json`` and, unless ``trainer.scene_map`` is
  false, ``classmap.tif`` streamed through the tiled predictor of ``geolesf predict``
  (:func:`geolesf.predict.tiled.predict_raster`): for a patch model from the ``model.pt`` the
  trainer saved, for a spectrum model (rf, svm) from the fitted estimator in this process. The
  streamed map is a COG with the predictor's tags (model, weights, tiling) and a ``.qml`` beside it;
  it differs from the in-memory map only in that ``data.mask_unlabelled`` is refused (the labels
  are not on the predictor's path) and ``preview.png`` is written only up to 25 Mpx.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geolesf.data.windowed import FeatureWindows, WindowedPatches

PREVIEW_MAX_PIXELS = 25_000_000


def is_windowed(scene: Any) -> bool:
    return isinstance(scene.features, FeatureWindows)


def scene_gatherer(scene: Any, patch_size: int, padding: str) -> Any:
    """Patches of the scene's pixels: whole-cube gatherer, or windowed with the training patches preloaded."""
    from geolesf.predict.patches import PatchGatherer

    if not is_windowed(scene):
        return PatchGatherer(scene.features, patch_size, padding)
    gather = WindowedPatches(scene.features, patch_size, padding)
    px = scene.pixels("train")
    gather.preload(px[:, 0], px[:, 1])
    return gather


def test_predictions(predictor: Any, scene: Any, batch: int = 1024, spectra_batch: int = 65536) -> np.ndarray:
    """Class index of every test pixel (row-major order, as ``scene.y[scene.split.test]``)."""
    px = scene.pixels("test")
    out = np.empty(len(px), dtype=np.int64)
    if hasattr(predictor, "estimator"):
        spectra = WindowedPatches(scene.features, 1)
        for s in range(0, len(px), spectra_batch):
            x = spectra.gather_all(px[s:s + spectra_batch, 0], px[s:s + spectra_batch, 1])[:, :, 0, 0].numpy()
            out[s:s + spectra_batch] = predictor.estimator.predict(x)
        return out
    model, gather = predictor.model.eval(), predictor.gather
    with torch.inference_mode():
        for s in range(0, len(px), batch):
            patches = gather.gather_all(px[s:s + batch, 0], px[s:s + batch, 1])
            out[s:s + batch] = model(patches).argmax(1).numpy()
    return out


def stream_class_map(scene: Any, predictor: Any, cfg: Any, out_dir: Path, progress: bool = True) -> Path:
    """``out_dir/classmap.tif`` through :func:`geolesf.predict.tiled.predict_raster` (memory flat)."""
    from geolesf.predict.model import load_predict_model
    from geolesf.predict.tiled import predict_raster

    out = out_dir / "classmap.tif"
    # the run's own checkpoint (rf/svm and patch models all save model.pt): the same band selection,
    # normalisation and classes as `geolesf predict` with it
    pm = load_predict_model(out_dir / "model.pt", cfg.model.name)
    batch = 65536 if hasattr(predictor, "estimator") else 1024
    predict_raster(scene.cube.path, pm, out, pixel_batch=batch, progress=progress)
    if scene.shape[0] * scene.shape[1] <= PREVIEW_MAX_PIXELS:
        import rasterio

        from geolesf.io.writers import write_preview_png

        with rasterio.open(out) as src:
            arr = src.read(1)
        names = {0: "unlabelled", **dict(zip(scene.class_ids, scene.class_names))}
        colors = {0: (0, 0, 0), **dict(zip(scene.class_ids, scene.class_colors))}
        write_preview_png(out_dir / "preview.png", arr, names, colors, title=f"{cfg.model.name} · split "
                          f"{scene.split.name} · streamed")
    return out


def finish_windowed(scene: Any, predictor: Any, cfg: Any, out_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """Write ``config.yaml``, the streamed class map (unless ``trainer.scene_map`` is false) and ``metrics.json``."""
    from geolesf.io.atomic import write_json

    if cfg.trainer.scene_map:
        t0 = time.perf_counter()
        stream_class_map(scene, predictor, cfg, out_dir)
        metrics["timings"]["scene_map_seconds"] = time.perf_counter() - t0
    metrics["windowed"] = True
    write_json(out_dir / "metrics.json", metrics)
    print(f"[{cfg.model.name}] OA {metrics['OA']:.4f}  AA {metrics['AA']:.4f}  kappa {metrics['kappa']:.4f}  "
          f"(fit {metrics['timings']['fit_seconds']:.1f} s, windowed) → {out_dir}")
    return metrics
