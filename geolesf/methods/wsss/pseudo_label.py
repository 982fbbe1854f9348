"""Georeferenced pseudo-labels of a whole scene: seeds + ignore value + a confidence band.

:func:`write_pseudo_labels` runs a ``geolesf-wsss/1`` checkpoint over a scene with the tiled,
streaming predictor (:func:`geolesf.predict.tiled.predict_raster`, overlap blending, nodata,
CRS/transform kept) and turns its blended class scores into a two-band uint8 GeoTIFF:

* band 1 ``pseudo_label`` — the class id (the dataset's own ids, e.g. VOC 0..20, LoveDA 1..7), or
  ``ignore_value`` (255) where the pixel is uncertain (best-vs-second score margin below
  ``margin``) or has no data;
* band 2 ``confidence`` — that margin in [0, 1], scaled by 254 (band scale 1/254), 255 on no-data.

For CAM / USAGE seeds the predictor blends the raw seed scores (``blend_on="logits"``) and writes
their softmax; since ``log p_a − log p_b = s_a − s_b`` the margin is recovered exactly from it.
For a single-stage checkpoint with ``stage="final"`` the margin is between the blended softmax
probabilities of its segmentation head. Both intermediate rasters live in a hidden folder beside
the output and are removed; the output appears only when complete.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.errors import ConfigError, DataError
from geolesf.io.atomic import check_outputs, check_tif_out, output_lock


@dataclass
class PseudoLabelResult:
    out: Path
    height: int
    width: int
    labelled_fraction: float
    """Share of valid pixels that received a class (not uncertain)."""
    class_counts: dict[str, int]
    seconds: float


def write_pseudo_labels(scene: str | Path, checkpoint: str | Path, out: str | Path, *, margin: float | None = None,
                        ignore_value: int = 255, stage: str | None = None, tags: Any = None,
                        presence: float = 0.5, scales: tuple[float, ...] = (1.0,), flip: bool = True,
                        tile: int = 512, overlap: int = 64, batch_size: int = 4, device: str = "cpu",
                        nodata: float | None = None, block: int = 512, progress: bool = True,
                        overwrite: bool = True) -> PseudoLabelResult:
    """Write the pseudo-label GeoTIFF ``out`` for ``scene`` (see the module docstring)."""
    import time

    started = time.perf_counter()
    out = Path(out)
    _check_out(out, ignore_value)
    # One run per destination (geolesf.io.atomic): lock, then no input is written and an existing
    # output only with ``overwrite`` (the CLI's --overwrite; library callers replace by default).
    with output_lock(out):
        check_outputs({"input scene": scene, "--checkpoint": checkpoint}, {"--out": out}, overwrite=overwrite)
        return _write(scene, checkpoint, out, margin=margin, ignore_value=ignore_value, stage=stage, tags=tags,
                      presence=presence, scales=scales, flip=flip, tile=tile, overlap=overlap,
                      batch_size=batch_size, device=device, nodata=nodata, progress=progress, block=block,
                      started=started)


def _write(scene: Any, checkpoint: Any, out: Path, *, margin: Any, ignore_value: int, stage: Any, tags: Any,
           presence: Any, scales: Any, flip: Any, tile: Any, overlap: Any, batch_size: Any, device: Any, nodata: Any,
           progress: Any, block: Any, started: float) -> "PseudoLabelResult":
    import tempfile
    import time

    from geolesf.methods.wsss.checkpoint import load as load_wsss_checkpoint
    from geolesf.methods.wsss.inference import to_predict_model
    from geolesf.predict.tiled import predict_raster

    bundle = load_wsss_checkpoint(checkpoint)
    if int(ignore_value) in bundle.class_ids:
        raise ConfigError(f"--ignore-value {ignore_value} is also a class id of this checkpoint; choose another")
    if max(bundle.class_ids) > 254:
        raise DataError(f"{checkpoint}: class ids up to {max(bundle.class_ids)} do not fit a uint8 pseudo-label band")
    stage = stage or "seeds"
    margin = float(bundle.cam.get("margin", 0.1) if margin is None else margin)
    opts: dict[str, Any] = {"stage": stage}
    if stage == "seeds":
        opts.update(presence=presence, scales=tuple(scales), flip=flip)
        if tags:
            opts["tags"] = tags
    pm = to_predict_model(bundle, opts)
    # unique per run (pid + random): nothing here is resumed
    parts = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".parts", dir=out.parent))
    try:
        res = predict_raster(scene, pm, parts / "class.tif", tile=tile, overlap=overlap, batch_size=batch_size,
                             blend_on="logits" if stage == "seeds" else "probabilities",
                             probabilities=parts / "scores.tif", out_nodata=int(ignore_value), nodata=nodata,
                             device=device, progress=progress, qml=False)
        tags_out = {"IGNORE_VALUE": str(ignore_value), "MARGIN": str(margin), "STAGE": stage, "METHOD": bundle.method,
                    "model": pm.name, "weights_sha256": bundle.sha256, "tile": str(tile), "overlap": str(overlap),
                    "geolesf_version": _version(), "source": Path(str(scene)).name}
        counts, kept, valid_total = _write_bands(parts, out, bundle, int(ignore_value), margin, stage, block, tags_out)
    finally:
        shutil.rmtree(parts, ignore_errors=True)
    return PseudoLabelResult(
        out=out, height=res.height, width=res.width, labelled_fraction=kept / valid_total if valid_total else 0.0,
        class_counts={n: int(c) for n, c in zip(bundle.class_names, counts)}, seconds=time.perf_counter() - started,
    )


def _check_out(out: Path, ignore_value: int) -> None:
    check_tif_out(out, "--out")
    if not 0 <= int(ignore_value) <= 255:
        raise ConfigError(f"--ignore-value {ignore_value}: expected 0..255 (the output is uint8)")


def _write_bands(parts: Path, out: Path, bundle: Any, ignore: int, margin: float, stage: str, block: int,
                 tags: dict[str, str]) -> tuple[np.ndarray, int, int]:
    """The two-band GeoTIFF ``out`` from the predictor's class and score rasters in ``parts``, block by block.

    Returns ``(labelled pixels per class, labelled pixels, valid pixels)``.
    """
    import rasterio

    from geolesf.io.cog import finalize_cog

    lut = np.full(256, -1, dtype=np.int64)
    lut[np.asarray(bundle.class_ids)] = np.arange(len(bundle.class_ids))
    counts = np.zeros(len(bundle.class_ids), dtype=np.int64)
    kept = valid_total = 0
    tmp = parts / "pseudo.tif"  # the temporary folder is removed by the caller
    with rasterio.open(parts / "class.tif") as cls, rasterio.open(parts / "scores.tif") as sc:
        profile = {"driver": "GTiff", "height": cls.height, "width": cls.width, "count": 2, "dtype": "uint8",
                   "crs": cls.crs, "transform": cls.transform, "nodata": ignore, "tiled": True,
                   "blockxsize": 256, "blockysize": 256, "compress": "deflate", "interleave": "band"}
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.set_band_description(1, "pseudo_label")
            dst.set_band_description(2, "confidence")
            dst.scales = (1.0, 1.0 / 254)
            for r0 in range(0, cls.height, block):
                win = rasterio.windows.Window(0, r0, cls.width, min(block, cls.height - r0))
                ids = cls.read(1, window=win)
                p = sc.read(window=win).astype(np.float64)
                valid = ids != ignore
                conf = _margin(p, stage)
                sure = valid & (conf >= margin)
                label = np.where(sure, ids, ignore).astype(np.uint8)
                conf_u8 = np.where(valid, np.rint(np.nan_to_num(conf) * 254), 255).astype(np.uint8)
                dst.write(label, 1, window=win)
                dst.write(conf_u8, 2, window=win)
                idx = lut[label[sure].astype(np.int64)]
                counts += np.bincount(idx, minlength=len(counts))
                kept += int(sure.sum())
                valid_total += int(valid.sum())
            dst.write_colormap(1, _colormap(bundle.class_ids, bundle.colors, ignore))
            dst.update_tags(
                CLASS_NAMES=json.dumps({str(i): n for i, n in zip(bundle.class_ids, bundle.class_names)}), **tags)
    finalize_cog(tmp, out, block=256, resampling="nearest", predictor=False)
    return counts, kept, valid_total


def _margin(p: np.ndarray, stage: str) -> np.ndarray:
    """Best-vs-second margin from ``(K, h, w)`` blended probabilities (seed scores: via log-ratios)."""
    if p.shape[0] == 1:
        return np.ones(p.shape[1:])
    top2 = -np.partition(-p, 1, axis=0)[:2]
    with np.errstate(divide="ignore", invalid="ignore"):
        diff = np.log(top2[0]) - np.log(top2[1]) if stage == "seeds" else top2[0] - top2[1]
    return np.clip(np.nan_to_num(diff, nan=0.0, posinf=1.0), 0.0, 1.0)


def _colormap(ids: list[int], colors: list[str], ignore: int) -> dict[int, tuple[int, int, int, int]]:
    cmap = {int(i): (int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16), 255) for i, c in zip(ids, colors)}
    cmap[ignore] = (0, 0, 0, 0)
    return cmap


def _version() -> str:
    from geolesf import __version__

    return __version__
