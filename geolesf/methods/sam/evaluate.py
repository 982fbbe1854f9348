"""``geolesf evaluate`` of SAM PEFT checkpoints.

Dice / IoU of a prompt checkpoint on a scene and its footprints (``--option image=... --option
labels=...``), or mIoU / Dice of a semantic checkpoint on tiles (``--option images=[...] --option
masks=[...]``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


from geolesf.errors import ConfigError


def evaluate_checkpoint(checkpoint: Any, *, dataset: str | None = None, data_root: str | None = None,
                        what: str | None = None, out: str | None = None, device: str = "cpu",
                        batch_size: int | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Dice/IoU (prompt) or mIoU/Dice (semantic) of a SAM PEFT checkpoint; writes a JSON."""
    from geolesf.io.atomic import atomic_path
    from geolesf.methods.sam.checkpoint import load_peft_model
    from geolesf.methods.sam.stem import scale_to_255
    from geolesf.methods.sam import data as sd
    from geolesf.methods.sam.train import evaluate_prompts, evaluate_semantic

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
