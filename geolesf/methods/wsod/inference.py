"""Tiled object detection over a large georeferenced scene → boxes in a styled GeoPackage.

``geolesf predict scene.tif --model ndi-wsod --checkpoint run/ndi.pt --out boxes.gpkg``

The scene is cut with the tiled predictor's grid (:func:`geolesf.predict.blend.tile_starts`:
fewest tiles of side ``--tile`` overlapping by at least ``--overlap``, the last one flush with
the scene edge). Each tile is read through :mod:`geolesf.predict.sources` (nodata-only tiles are
skipped), converted to 8-bit RGB (the first three bands, or band 1 repeated; non-8-bit scenes
are stretched between the scene's 2nd and 98th percentiles, measured once on a decimated read),
given selective-search proposals and run through the detector (per-class NMS inside the tile).

**Across tiles** the boxes are merged per class in the scene frame by
:func:`geolesf.predict.boxes.merge_tile_detections` (complete boxes win over ones truncated by an
interior tile edge; an object cut by a tile border yields one box).

Boxes are written in the scene CRS by :func:`geolesf.export.boxes.write_boxes_gpkg`.
``--option`` keys: ``score_threshold`` (0.05), ``nms`` (0.4), ``merge_iou`` (0.4), ``merge_ios``
(0.7), ``scales`` (default: the tile's own size, i.e. native resolution), ``flip`` (false),
``max_per_tile`` (100), ``bands`` (1-based band list, default ``[1, 2, 3]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from geolesf.errors import ConfigError, DataError, ModelError
from geolesf.methods.wsod.checkpoint import FORMAT
from geolesf.predict.boxes import TileDetections, merge_tile_detections
from geolesf.predict.model import check_model_name

KNOWN = {"score_threshold", "nms", "merge_iou", "merge_ios", "scales", "flip", "max_per_tile", "bands"}


def _stretch(path: Path, bands: list[int]) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-band 2nd/98th percentiles from a decimated read (None for 8-bit scenes)."""
    import rasterio

    with rasterio.open(path) as ds:
        if all(ds.dtypes[b - 1] == "uint8" for b in bands):
            return None
        f = max(1, max(ds.height, ds.width) // 1024)
        data = ds.read(bands, out_shape=(len(bands), max(1, ds.height // f), max(1, ds.width // f)), masked=True)
    lo, hi = [], []
    for band in data:
        v = band.compressed().astype(np.float64)
        v = v[np.isfinite(v)]
        lo.append(np.percentile(v, 2) if v.size else 0.0)
        hi.append(np.percentile(v, 98) if v.size else 1.0)
    return np.asarray(lo), np.asarray(hi)


def to_rgb8(data: np.ndarray, stretch: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """``(bands, h, w)`` → ``(h, w, 3)`` uint8 (band 1 repeated when there is only one)."""
    x = data.astype(np.float64)
    if stretch is not None:
        lo, hi = stretch
        x = (x - lo[:, None, None]) / np.maximum(hi - lo, 1e-12)[:, None, None] * 255.0
    x = np.nan_to_num(np.clip(x, 0, 255)).astype(np.uint8)
    if x.shape[0] == 1:
        x = np.repeat(x, 3, axis=0)
    return np.ascontiguousarray(x[:3].transpose(1, 2, 0))


def detect_scene(scene: str | Path, checkpoint: str | Path, out: str | Path, *, tile: int = 512, overlap: int = 128,
                 device: str = "cpu", options: dict[str, Any] | None = None, model_name: str | None = None) -> Any:
    """Detect objects over ``scene`` tile by tile and write ``out`` (.gpkg); returns the export result."""
    from geolesf.export.boxes import write_boxes_gpkg
    from geolesf.methods.wsod.proposals import ProposalProvider, selective_search
    from geolesf.predict.blend import check_geometry, tile_starts
    from geolesf.predict.sources import open_source
    from geolesf.methods.wsod.checkpoint import load as load_wsod_checkpoint
    from geolesf.methods.wsod.evaluate import postprocess

    opts = dict(options or {})
    unknown = sorted(set(opts) - KNOWN)
    if unknown:
        raise ConfigError(f"--option {unknown[0]}: unknown for ndi-wsod prediction (known: {', '.join(sorted(KNOWN))})")
    check_geometry(tile, overlap, "none", None)
    model, payload, _ = load_wsod_checkpoint(checkpoint, device)
    check_model_name(checkpoint, payload.get("model_name"), model_name)
    src = open_source(scene)
    bands = [int(b) for b in opts.get("bands", [1, 2, 3] if src.count >= 3 else [1])]
    if any(b < 1 or b > src.count for b in bands) or len(bands) not in (1, 3):
        raise DataError(f"{scene}: --option bands={bands} must name 1 or 3 of its {src.count} bands")
    stretch = _stretch(Path(scene), [src.indexes[b - 1] for b in bands])
    p = payload.get("proposals", {})
    ProposalProvider("selective_search")  # fails early, with the install hint, without cv2.ximgproc
    ss = {"mode": p.get("mode", "fast"), "max_side": p.get("max_side", 500),
          "max_proposals": int(p.get("max_proposals", 2000)), "min_size": int(p.get("min_size", 8))}
    scales = opts.get("scales")
    flip = bool(opts.get("flip", False))
    thr, nms = float(opts.get("score_threshold", 0.05)), float(opts.get("nms", 0.4))
    cap = int(opts.get("max_per_tile", 100))
    rows, cols = tile_starts(src.height, tile, overlap), tile_starts(src.width, tile, overlap)
    results: list[TileDetections] = []
    try:
        for r0 in tqdm(rows, desc="detect", unit="tile row", leave=False):
            for c0 in cols:
                r1, c1 = min(r0 + tile, src.height), min(c0 + tile, src.width)
                data, valid = src.read(r0, r1, c0, c1)
                if not valid.any():
                    continue
                img = to_rgb8(data[[b - 1 for b in bands]], stretch)
                img[~valid] = 0
                rois = selective_search(img, **ss)
                if len(rois) == 0:
                    continue
                sc = [int(s) for s in scales] if scales else [min(img.shape[:2])]
                s, b = model.detect(img, rois, tuple(sc), max(img.shape[:2]) * 4, flip)
                det = postprocess(s, b, nms, thr, cap)
                shifted = det.boxes + np.array([c0, r0, c0, r0], dtype=np.float64)
                results.append(TileDetections(r0, c0, r1 - r0, c1 - c0, shifted, det.scores, det.labels))
    finally:
        src.close()
    boxes, scores, labels = merge_tile_detections(results, src.height, src.width,
                                                  float(opts.get("merge_iou", 0.4)), float(opts.get("merge_ios", 0.7)))
    # Detector boxes use inclusive pixel indices; polygons cover whole pixels (right/bottom edge + 1).
    edges = boxes + np.array([0.0, 0.0, 1.0, 1.0])
    return write_boxes_gpkg(out, edges, scores, labels, payload["class_names"], crs=src.crs, transform=src.transform)


def predict_model(checkpoint: Any, model_name: str | None, options: dict[str, Any]) -> Any:
    """The :mod:`geolesf.formats` inference entry: a detector has no dense PredictModel (one-line error)."""
    from geolesf.methods.wsod.checkpoint import load as load_wsod_checkpoint

    load_wsod_checkpoint(checkpoint)  # a malformed checkpoint says so first
    raise ModelError(f"{checkpoint}: a '{FORMAT}' detection checkpoint predicts boxes, not a class raster; "
                     "use geolesf predict SCENE --checkpoint it --out boxes.gpkg")


def run(request: Any) -> int:
    """``geolesf predict`` of a detection checkpoint: boxes to a styled GeoPackage."""
    if request.options.get("classes") or request.options.get("prompts"):
        raise ConfigError("--classes/--prompts: not used by ndi-wsod (its classes come from the checkpoint)")
    for flag in ("probabilities", "resume", "blend"):
        if getattr(request, flag):
            raise ConfigError(f"--{flag}: not available for detection checkpoints (output is a box GeoPackage)")
    if request.tile == "auto" or getattr(request, "memory_budget", None) is not None:
        raise ConfigError("--tile auto/--memory-budget: not available for detection checkpoints; give --tile PIXELS")
    result = detect_scene(request.scene, request.checkpoint, request.out, tile=request.tile or 512,
                          overlap=request.overlap if request.overlap is not None else 128,
                          device=request.device, options=dict(request.options), model_name=request.model_name)
    print(f"wrote {result.gpkg} ({result.features} boxes, layer '{result.layer}')")
    if result.qml is not None:
        print(f"wrote {result.qml}")
    return 0
