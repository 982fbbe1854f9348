"""Benchmark evaluation of H-CLIP checkpoints (:func:`evaluate`, the ``evaluate`` entry of format
``geolesf-hclip/1`` in :mod:`geolesf.formats`; Lightning and the training code are not imported).

Each image's short side is resized to ``short_side`` (640, methods.md §1.3), logits are averaged over
sliding ``window×window`` crops (``stride``, default ⅔ of the window) and upsampled to the original
size; the arg-max is scored with one confusion matrix over the whole split
(:class:`geolesf.metrics.segmentation.SegmentationConfusion`, the Detectron2 ``SemSegEvaluator``
convention: ignore label skipped, classes with an empty union left out of the mean).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.errors import ConfigError
from geolesf.methods.hclip.checkpoint import load as load_hclip_checkpoint
from geolesf.methods.hclip.data import _resize_short


def sliding_logits(model: Any, image: np.ndarray, class_names: list[str], *, short_side: int, window: int,
                   stride: int, device: str = "cpu") -> Any:
    """Sliding-window logits ``(C, h, w)`` averaged over overlapping windows, at the resized scale."""
    import torch
    from torch.nn import functional as F

    img, _ = _resize_short(image, None, short_side)
    h, w = img.shape[:2]
    x = model.normalise_uint8(torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].to(device))
    p = model.patch_size
    ph, pw = -(-h // p) * p, -(-w // p) * p   # pad to the patch grid only
    wy, wx = (max(p, min(window, n) // p * p) for n in (ph, pw))
    x = F.pad(x, (0, pw - w, 0, ph - h))
    acc = torch.zeros(len(class_names), ph, pw, device=device)
    cnt = torch.zeros(1, ph, pw, device=device)
    ys = sorted(set(range(0, ph - wy + 1, stride)) | {ph - wy})
    xs = sorted(set(range(0, pw - wx + 1, stride)) | {pw - wx})
    with torch.inference_mode():
        for y0 in ys:
            for x0 in xs:
                acc[:, y0:y0 + wy, x0:x0 + wx] += model(x[:, :, y0:y0 + wy, x0:x0 + wx], class_names)[0]
                cnt[:, y0:y0 + wy, x0:x0 + wx] += 1
    return (acc / cnt)[:, :h, :w]


def upsampled_argmax(logits: Any, size: tuple[int, int], chunk: int = 16) -> np.ndarray:
    """Arg-max of the bilinearly upsampled logits, ``chunk`` classes at a time (bounded memory)."""
    import torch
    from torch.nn import functional as F

    best_val = best_idx = None
    with torch.inference_mode():
        for c0 in range(0, logits.shape[0], chunk):
            up = F.interpolate(logits[None, c0:c0 + chunk], size=size, mode="bilinear", align_corners=False)[0]
            val, idx = up.max(0)
            if best_val is None:
                best_val, best_idx = val, idx
            else:
                better = val > best_val
                best_val = torch.where(better, val, best_val)
                best_idx = torch.where(better, idx + c0, best_idx)
    return best_idx.cpu().numpy()


def evaluate_checkpoint(checkpoint: Any, *, dataset: str | None, data_root: str | None, what: str | None,
                        out: str | None, device: str, batch_size: int | None, options: dict[str, Any]) -> dict[str, Any]:
    """mIoU and per-class IoU of an H-CLIP checkpoint on a benchmark (what :func:`evaluate` runs)."""
    import os

    from tqdm import tqdm

    from geolesf.data.benchmarks.registry import open_benchmark, prompt_names
    from geolesf.io.atomic import write_json
    from geolesf.metrics.segmentation import SegmentationConfusion

    del what, batch_size
    if not dataset:
        raise ConfigError("--dataset: required for hclip checkpoints (e.g. ade20k, voc, pascal_context59, coco_stuff)")
    root = data_root or os.environ.get("GEOLESF_DATA")
    if not root:
        raise ConfigError("--data-root: required (or set GEOLESF_DATA)")
    opts = dict(options)
    ds = open_benchmark(dataset, root, opts.pop("split", None))
    model, payload, digest = load_hclip_checkpoint(checkpoint)
    model.to(device)
    names = [str(n) for n in opts.pop("classes", None) or prompt_names(ds)]
    if len(names) != ds.num_classes:
        raise ConfigError(f"--option classes: {len(names)} names for {ds.num_classes} classes of {dataset}")
    short = int(opts.pop("short_side", 640))
    window = int(opts.pop("window", 384))
    stride = int(opts.pop("stride", max(1, window * 2 // 3)))
    limit = opts.pop("max_images", None)
    if opts:
        raise ConfigError(f"--option: unknown key(s) {sorted(opts)} for hclip (classes, split, short_side, window, "
                          "stride, max_images)")
    cm = SegmentationConfusion(ds.num_classes, ignore_index=ds.ignore_index)
    n = len(ds) if limit is None else min(len(ds), int(limit))
    start = time.perf_counter()
    for i in tqdm(range(n), desc=f"hclip {dataset}", unit="img"):
        s = ds[i]
        logits = sliding_logits(model, s["image"], names, short_side=short, window=window, stride=stride,
                                device=device)
        cm.update(s["mask"], upsampled_argmax(logits, s["mask"].shape))
    m = cm.compute(list(ds.class_names))
    m.update({"dataset": dataset, "images": n, "checkpoint_sha256": digest, "short_side": short, "window": window,
              "stride": stride, "seconds": round(time.perf_counter() - start, 2)})
    miou = m["mIoU"]
    m["summary"] = (f"{dataset}: mIoU {miou:.4f} over {n} images ({ds.num_classes} classes)" if miou is not None
                    else f"{dataset}: no labelled pixels in {n} images")
    path = Path(out) if out else Path(payload["_path"]).parent / f"evaluation_{dataset}.json"
    write_json(path, m, indent=2)
    m["written_to"] = str(path)
    return m


def evaluate(request: Any) -> dict[str, Any]:
    """The :mod:`geolesf.formats` evaluator entry."""
    return evaluate_checkpoint(request.checkpoint, **request.benchmark_args())
