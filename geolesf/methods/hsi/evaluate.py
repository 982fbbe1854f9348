"""Evaluate a trained hyperspectral checkpoint (patch model, or rf/svm spectrum model) on the test pixels of a split.

The split is rebuilt from the run's saved ``config.yaml`` (beside the checkpoint) or from
options, with the same seed, so ``geolesf evaluate`` reproduces the numbers written by
``geolesf train``. The cube is normalised with the statistics stored in the checkpoint, not
re-fitted.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from geolesf.errors import ConfigError, DataError


def find_run_config(checkpoint: Path) -> Path | None:
    for candidate in (checkpoint.parent / "config.yaml", checkpoint.parent.parent / "config.yaml"):
        if candidate.is_file():
            return candidate
    return None


def evaluate_checkpoint(
    checkpoint: str | Path,
    config: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
    out: str | Path | None = None,
    batch_size: int = 1024,
    device: str = "cpu",
) -> dict[str, Any]:
    """Metrics (as in ``metrics.json``) of ``checkpoint`` on the test pixels; also written to ``out``."""
    import torch

    from geolesf.config import TrainConfig, load_config
    from geolesf.methods.hsi.checkpoint import load_any as load_patch_checkpoint
    from geolesf.predict.patches import PatchGatherer, predict_pixels
    from geolesf.methods.hsi.train import prepare_scene, score_test_pixels

    ckpt = load_patch_checkpoint(checkpoint)
    checkpoint = ckpt.path  # a MODEL:TAG spec resolved to its (verified) file
    config = Path(config) if config else find_run_config(checkpoint)
    stored = ckpt.extra.get("config")
    if config is None and not stored and not base:
        raise ConfigError(
            f"{checkpoint}: no config.yaml beside it and none stored in it; pass --config or "
            "--cube/--labels/--split to say which pixels to evaluate on"
        )
    # Precedence: --config, then the run's config.yaml, then the config stored in the checkpoint.
    cfg = load_config(TrainConfig, config, overrides, base=base, initial=None if config else stored)
    if getattr(ckpt, "kind", "pixel") == "pixel" and cfg.data.patch_size != ckpt.patch_size:
        cfg.data.patch_size = ckpt.patch_size
    cfg.data.windowed = False  # evaluation reads the cube whole (windowed evaluation is not implemented)
    scene = prepare_scene(cfg)
    if scene.class_ids != list(ckpt.class_ids):
        raise DataError(
            f"{checkpoint} was trained on class ids {ckpt.class_ids}; the evaluation labels hold {scene.class_ids}"
        )
    if scene.cube.bands != ckpt.in_bands:
        raise DataError(f"{scene.cube.path} has {scene.cube.bands} bands; model {ckpt.model_name} expects {ckpt.in_bands}")
    features = ckpt.normalise(scene.cube.data)
    gather = PatchGatherer(features, ckpt.patch_size, ckpt.padding)
    test = scene.pixels("test")
    if len(test) == 0:
        raise DataError(f"split '{scene.split.name}' has no test pixels")
    model = ckpt.model.to(device)
    start = time.perf_counter()
    with torch.inference_mode():
        pred = predict_pixels(model, gather, test[:, 0], test[:, 1], batch_size, desc="evaluate")
    seconds = time.perf_counter() - start
    truth = scene.y[test[:, 0], test[:, 1]]
    scene.class_names = list(ckpt.class_names)
    metrics = score_test_pixels(scene, truth, pred)
    metrics.update(
        checkpoint={"path": str(checkpoint), "sha256": ckpt.sha256, "model": ckpt.model_name},
        seconds=seconds,
        pixels_per_second=len(test) / max(seconds, 1e-9),
    )
    out = Path(out) if out else checkpoint.parent / "evaluation.json"
    from geolesf.io.atomic import atomic_path

    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    metrics["written_to"] = str(out)
    return metrics


def evaluate(request: Any) -> dict[str, Any]:
    """``geolesf evaluate`` of a patch or spectrum checkpoint: :func:`evaluate_checkpoint` on the request's split."""
    base = {k: v for k, v in (("data.cube", request.cube), ("data.labels", request.labels),
                               ("data.split", request.split)) if v}
    m = evaluate_checkpoint(request.checkpoint, request.config, list(request.overrides), base=base, out=request.out,
                            batch_size=request.batch_size or 1024, device=request.device)
    m["summary"] = (f"OA {m['OA']:.4f}  AA {m['AA']:.4f}  kappa {m['kappa']:.4f}  macro IoU {m['macro_IoU']:.4f}  "
                    f"({m['split']['name']} split, {m['split']['test_pixels']} test px)")
    return m
