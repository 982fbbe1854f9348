"""mIoU of each WSSS stage: ``seeds`` (CAM), ``pseudo`` (affinity-refined seeds), ``final`` (segmenter).

``geolesf evaluate --checkpoint run/model.pt --dataset voc2012 --what seeds|pseudo|final`` scores a
``geolesf-wsss/1`` checkpoint against the dense masks of a benchmark with one confusion matrix over
the split (:class:`geolesf.metrics.segmentation.SegmentationConfusion`, 255 ignored):

* ``seeds`` — multi-scale + flip CAMs of the image's ground-truth tags (the standard seed protocol:
  tags are the supervision), normalised, argmax against a constant background score
  (``bg_threshold``; aerial label sets without background: argmax over the tagged classes);
* ``pseudo`` — the same CAM scores propagated by a random walk on the model's affinity at the
  feature resolution (attention for ViT, the embedding head for single-stage CNNs, cosine
  feature affinity for plain CNN CAMs), resized back;
* ``final`` — the segmentation head of a single-stage checkpoint (no tags used).

``mIoU`` scores every pixel's argmax; ``mIoU_confident`` only pixels whose best-vs-second score
margin reaches ``margin`` (the pixels a pseudo-label GeoTIFF keeps), and ``coverage`` is their share.
Options (``--option k=v``): ``split``, ``bg_threshold``, ``scales``, ``flip``, ``margin``,
``max_side`` (downscale larger images first), ``limit`` (first N images), ``radius``, ``beta``,
``iters``, and the dataset options of :func:`geolesf.methods.wsss.data.open_dataset`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from geolesf.errors import ConfigError, ModelError
from geolesf.metrics.segmentation import SegmentationConfusion
from geolesf.methods.wsss.cam import class_scores, multiscale_cams, scores_to_seeds
from geolesf.losses.affinity import attention_affinity, embedding_affinity, feature_affinity, random_walk
from geolesf.methods.wsss.checkpoint import WSSSBundle
from geolesf.methods.wsss.checkpoint import load as load_wsss_checkpoint
from geolesf.methods.wsss.data import WSSSDataset, open_dataset, to_tensor

STAGES = ("seeds", "pseudo", "final")
_STAGE_OPTIONS = ("split", "bg_threshold", "scales", "flip", "margin", "max_side", "limit", "radius", "beta",
                  "iters", "progress")


def fit_divisor(x: torch.Tensor, d: int) -> torch.Tensor:
    """Resize ``(B, 3, H, W)`` to the nearest multiple of ``d`` per side (no-op when already one)."""
    h, w = x.shape[-2:]
    if d <= 1 or (h % d == 0 and w % d == 0):
        return x
    size = (max(d, int(round(h / d)) * d), max(d, int(round(w / d)) * d))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def stage_settings(bundle: WSSSBundle, options: dict[str, Any]) -> dict[str, Any]:
    cam = bundle.cam
    ss = (bundle.single_stage.get("options") or {}) if bundle.method == "single-stage" else {}
    s = {
        "bg_threshold": cam.get("bg_threshold") if bundle.background else None,
        "scales": list(cam.get("scales", [1.0, 0.5, 1.5, 2.0])),
        "flip": bool(cam.get("flip", True)),
        "margin": float(cam.get("margin", 0.1)),
        "radius": float(ss.get("radius", 5.0)),
        "beta": float(ss.get("refine_beta", 2.0)),
        "iters": int(ss.get("refine_iters", 2)),
        "attention_layers": int(ss.get("attention_layers", 4)),
    }
    for k in ("bg_threshold", "scales", "flip", "margin", "radius", "beta", "iters"):
        if k in options:
            s[k] = options[k]
    if s["bg_threshold"] is not None and not bundle.background:
        raise ConfigError("--option bg_threshold: this checkpoint's classes have no background class")
    return s


@torch.no_grad()
def stage_scores(bundle: WSSSBundle, x: torch.Tensor, labels: torch.Tensor, what: str,
                 s: dict[str, Any]) -> torch.Tensor:
    """Per-pixel class scores ``(1, K, H, W)`` of one normalised image for a stage."""
    net = bundle.cam_net
    h, w = x.shape[-2:]
    if what == "final":
        if bundle.method != "single-stage":
            raise ModelError(f"--what final needs a single-stage checkpoint; this one was trained with "
                             f"method '{bundle.method}' (score 'seeds' or 'pseudo')")
        from geolesf.methods.wsss.single_stage import segment

        prob = segment(bundle.model, fit_divisor(x, net.size_divisor), flip=bool(s["flip"]))
        return F.interpolate(prob, size=(h, w), mode="bilinear", align_corners=False)
    cams = multiscale_cams(net, x, scales=s["scales"], flip=s["flip"])
    scores = class_scores(cams, labels, s["bg_threshold"])
    if what == "seeds":
        return scores
    if what != "pseudo":
        raise ConfigError(f"--what must be one of {', '.join(STAGES)}, found '{what}'")
    xin = fit_divisor(x, net.size_divisor)
    if bundle.method == "single-stage":
        out = bundle.model.forward_all(xin)
        feats, attn, emb = None, out["attn"], out["emb"]
    else:
        feats, attn = net.features(xin)
        emb = None
    grid = (feats if feats is not None else emb).shape[-2:]
    small = F.interpolate(scores, size=grid, mode="bilinear", align_corners=False)
    if net.is_transformer and attn:
        aff = attention_affinity(attn, layers=s["attention_layers"])
    elif emb is not None:
        aff = embedding_affinity(emb, radius=s["radius"])
    else:
        aff = feature_affinity(feats, radius=s["radius"])
    small = random_walk(small, aff, beta=s["beta"], iters=s["iters"])
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


def evaluate_bundle(bundle: WSSSBundle, ds: WSSSDataset, what: str, options: dict[str, Any] | None = None,
                    device: str = "cpu") -> dict[str, Any]:
    """Confusion-matrix metrics of one stage over ``ds`` (see the module docstring)."""
    from tqdm.auto import tqdm

    options = dict(options or {})
    if what not in STAGES:
        raise ConfigError(f"--what must be one of {', '.join(STAGES)}, found '{what}'")
    if what == "final" and bundle.method != "single-stage":
        raise ModelError(f"--what final needs a single-stage checkpoint; this one was trained with "
                         f"method '{bundle.method}' (score 'seeds' or 'pseudo')")
    s = stage_settings(bundle, options)
    if len(ds.class_names) != len(bundle.class_names):
        raise ConfigError(f"dataset {ds.name} has {len(ds.class_names)} classes; the checkpoint was trained "
                          f"for {len(bundle.class_names)} ({', '.join(bundle.class_names[:4])}, ...)")
    bundle.model.to(device).eval()
    k = len(ds.class_names)
    full, confident = SegmentationConfusion(k), SegmentationConfusion(k)
    kept = total = 0
    n = min(len(ds), int(options.get("limit") or len(ds)))
    max_side = options.get("max_side")
    for i in tqdm(range(n), desc=f"wsss {what}", disable=not options.get("progress", True), leave=False):
        sample = ds[i]
        image, mask = sample["image"], np.asarray(sample["mask"])
        x = to_tensor(image, bundle.mean, bundle.std)[None].to(device)
        if max_side and max(image.shape[:2]) > int(max_side):
            f = int(max_side) / max(image.shape[:2])
            size = (max(1, round(image.shape[0] * f)), max(1, round(image.shape[1] * f)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            mask = np.asarray(F.interpolate(torch.from_numpy(mask)[None, None].float(), size=size,
                                            mode="nearest")[0, 0].long())
        labels = torch.from_numpy(np.asarray(sample["labels"], dtype=np.float32))[None].to(device)
        scores = stage_scores(bundle, x, labels, what, s)
        pred, conf = scores_to_seeds(scores, 0.0)
        pred, conf = pred[0].cpu().numpy(), conf[0].cpu().numpy()
        full.update(mask, pred)
        sure = conf >= float(s["margin"])
        valid = mask != 255
        kept += int((sure & valid).sum())
        total += int(valid.sum())
        confident.update(np.where(sure, mask, 255), pred)
    m = full.compute(ds.class_names)
    mc = confident.compute(ds.class_names)
    m.update({
        "what": what, "dataset": ds.name, "images": n, "method": bundle.method,
        "mIoU_confident": mc["mIoU"], "coverage": kept / total if total else None,
        "settings": {k2: v for k2, v in s.items()},
    })
    m["summary"] = (f"{what} mIoU {m['mIoU']:.4f} (confident {mc['mIoU'] or 0:.4f} on "
                    f"{100 * (m['coverage'] or 0):.1f}% of pixels) over {n} {ds.name} images")
    return m


def evaluate_checkpoint(checkpoint: Any, *, dataset: str | None, data_root: str | None, what: str | None,
                        out: str | None, device: str = "cpu", batch_size: int | None = None,
                        options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score a checkpoint on a benchmark; :func:`evaluate` unpacks the request (``batch_size`` is unused)."""
    from geolesf.io.atomic import atomic_path

    options = dict(options or {})
    bundle = load_wsss_checkpoint(checkpoint)
    what = what or "seeds"
    dataset = dataset or bundle.extra.get("dataset")
    if not dataset:
        raise ConfigError("--dataset is required (the checkpoint does not name its training dataset)")
    data_opts = {k: v for k, v in options.items() if k not in _STAGE_OPTIONS}
    if dataset == bundle.extra.get("dataset"):
        data_opts = {**(bundle.extra.get("dataset_options") or {}), **data_opts}
    root = data_root or (bundle.extra.get("data_root") if dataset == bundle.extra.get("dataset") else None)
    split = options.get("split") or bundle.extra.get("split") or "val"
    ds = open_dataset(dataset, root, split, **data_opts)
    m = evaluate_bundle(bundle, ds, what, options, device)
    m["checkpoint_sha256"] = bundle.sha256
    m["split"] = split
    dest = Path(out) if out else Path(bundle.path).with_name(f"evaluation_{what}.json")
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(m, indent=1) + "\n")
    m["written_to"] = str(dest)
    return m


def evaluate(request: Any) -> dict[str, Any]:
    """The :mod:`geolesf.formats` evaluator entry."""
    return evaluate_checkpoint(request.checkpoint, **request.benchmark_args())
