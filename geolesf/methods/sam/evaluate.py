"""``geolesf evaluate`` of SAM PEFT checkpoints, and the losses and scores training shares with it.

Dice / IoU of a prompt checkpoint on a scene and its footprints (``--option image=... --option
labels=...``), or mIoU / Dice of a semantic checkpoint on tiles (``--option images=[...] --option
masks=[...]``). :func:`evaluate` is the ``evaluate`` entry of format ``geolesf-sam-peft/1`` in
:mod:`geolesf.formats`; :func:`evaluate_prompts` / :func:`evaluate_semantic` also score the held-out
set before and after fine-tuning in :mod:`geolesf.methods.sam.train`. Nothing here imports Lightning.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from geolesf.errors import ConfigError


# --------------------------------------------------------------------------------------------
# losses and metrics


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits + soft Dice, averaged over masks (``(N, H, W)`` each)."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = logits.sigmoid().flatten(1)
    t = target.flatten(1)
    dice = 1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)
    return bce + dice.mean()


def mask_scores(logits: torch.Tensor, target: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-mask Dice ``2|P∩G|/(|P|+|G|)`` and IoU of ``logits > 0`` against ``target``."""
    p = (logits > 0).flatten(1).float()
    t = (target > 0.5).flatten(1).float()
    inter, ps, ts = (p * t).sum(1), p.sum(1), t.sum(1)
    dice = torch.where(ps + ts > 0, 2 * inter / (ps + ts).clamp(min=1), torch.ones_like(inter))
    iou = torch.where(ps + ts - inter > 0, inter / (ps + ts - inter).clamp(min=1), torch.ones_like(inter))
    return dice.tolist(), iou.tolist()


def prompt_outputs(model: Any, batch: dict[str, Any], prompt: str) -> list[torch.Tensor]:
    if prompt == "box":
        return model.forward_prompted(batch["image"], boxes=batch["boxes"])
    return model.forward_prompted(batch["image"], points=list(zip(batch["points"], batch["point_labels"])))


# --------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def evaluate_prompts(model: Any, dataset: Any, prompt: str = "box") -> dict[str, Any]:
    """Mean loss, Dice and IoU over every object of an evaluation :class:`PromptCrops`."""
    from tqdm.auto import tqdm

    from geolesf.methods.sam.data import collate_prompts

    model.eval()
    device = next(model.parameters()).device
    dices, ious, losses = [], [], []
    for i in tqdm(range(len(dataset)), desc="evaluate", unit="crop", leave=False):
        item = {k: v.to(device) for k, v in dataset[i].items()}
        batch = collate_prompts([item])
        logits = prompt_outputs(model, batch, prompt)[0][:, 0].cpu()
        target = batch["masks"][0].cpu()
        losses.append(float(dice_bce_loss(logits, target)) * len(target))
        d, u = mask_scores(logits, target)
        dices += d
        ious += u
    n = max(len(dices), 1)
    return {"loss": sum(losses) / n, "dice": float(np.mean(dices)), "iou": float(np.mean(ious)),
            "objects": len(dices), "crops": len(dataset)}


@torch.no_grad()
def evaluate_semantic(model: Any, dataset: Any, class_names: list[str]) -> dict[str, Any]:
    """Cross-entropy, mIoU and mean Dice (from one confusion matrix) over an evaluation set."""
    from tqdm.auto import tqdm

    from geolesf.metrics.segmentation import SegmentationConfusion

    model.eval()
    conf = SegmentationConfusion(len(class_names), ignore_index=-100)
    total, n = 0.0, 0
    device = next(model.parameters()).device
    for i in tqdm(range(len(dataset)), desc="evaluate", unit="crop", leave=False):
        x, y = dataset[i]
        logits = model(x[None].to(device)).cpu()
        total += float(F.cross_entropy(logits, y[None], ignore_index=-100))
        n += 1
        conf.update(y.numpy(), logits.argmax(1)[0].numpy())
    m = conf.compute(class_names)
    cm = conf.matrix.astype(np.float64)
    tp, denom = np.diag(cm), cm.sum(0) + cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(denom > 0, 2 * tp / denom, np.nan)
    m.update(loss=total / max(n, 1), mean_dice=float(np.nanmean(dice)) if np.isfinite(dice).any() else None,
             per_class_dice={c: (None if not np.isfinite(v) else float(v)) for c, v in zip(class_names, dice)})
    return m


# --------------------------------------------------------------------------------------------
# geolesf evaluate


def evaluate_checkpoint(checkpoint: Any, *, dataset: str | None = None, data_root: str | None = None,
                        what: str | None = None, out: str | None = None, device: str = "cpu",
                        batch_size: int | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Dice/IoU (prompt) or mIoU/Dice (semantic) of a SAM PEFT checkpoint; writes a JSON."""
    from geolesf.io.atomic import atomic_path
    from geolesf.methods.sam.checkpoint import load as load_peft_model
    from geolesf.methods.sam.stem import scale_to_255
    from geolesf.methods.sam import data as sd

    options = dict(options or {})
    model, payload, digest = load_peft_model(checkpoint, options.get("base_checkpoint"))
    lo, hi = payload["band_lo"].numpy(), payload["band_hi"].numpy()
    crop = int(options.get("crop", payload["extra"].get("crop", model.img_size)))
    if payload["mode"] == "prompt":
        if not options.get("image") or not options.get("labels"):
            raise ConfigError("--option image=SCENE.tif --option labels=FOOTPRINTS are needed for a prompt checkpoint")
        scene = sd.read_prompt_scene(options["image"], options["labels"])
        ds = sd.PromptCrops(scene, scale_to_255(scene.image, lo, hi), (0, scene.instances.shape[0]), crop,
                            train=False, max_objects=int(options.get("max_objects", 64)))
        m = evaluate_prompts(model, ds, payload["extra"].get("prompt", "box"))
        summary = f"Dice {m['dice']:.4f}  IoU {m['iou']:.4f}  ({m['objects']} objects, {m['crops']} crops)"
    else:
        images, masks = options.get("images") or [], options.get("masks") or []
        if not images or len(images) != len(masks):
            raise ConfigError("--option images=[...] --option masks=[...] (same length) are needed for a semantic "
                              "checkpoint")
        ids = list(payload["class_ids"])
        ds = sd.SemanticCrops([scale_to_255(sd.read_tile(p), lo, hi) for p in images],
                              [sd.label_lut(sd.read_tile(p)[0], ids) for p in masks], crop, train=False)
        m = evaluate_semantic(model, ds, list(payload["class_names"]))
        summary = f"mIoU {m['mIoU'] or 0:.4f}  mean Dice {m['mean_dice'] or 0:.4f}  ({len(images)} tiles)"
    m.update(checkpoint=str(checkpoint), sha256=digest, summary=summary)
    dest = Path(out) if out else Path(str(checkpoint)).with_name("evaluation.json")
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(m, indent=1, default=str) + "\n")
    m["written_to"] = str(dest)
    return m


def evaluate(request: Any) -> dict[str, Any]:
    """The :mod:`geolesf.formats` evaluator entry."""
    return evaluate_checkpoint(request.checkpoint, **request.benchmark_args())
