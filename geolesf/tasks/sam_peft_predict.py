"""Prediction and evaluation hooks for ``geolesf-sam-peft/1`` checkpoints.

* :func:`predict_loader` (``PREDICT_LOADERS``): a *semantic* checkpoint as a dense
  :class:`~geolesf.predict.tiled.PredictModel`, so the tiled, streaming predictor writes a
  georeferenced class COG.
* :func:`predict_runner` (``PREDICT_RUNNERS``): ``geolesf predict SCENE --checkpoint peft.pt
  --prompts boxes.gpkg --out mask.tif`` — one mask per prompt (polygons/boxes → box prompts, points →
  point prompts; reprojected to the scene CRS), each predicted on a window around its prompt and
  merged into a uint8 mask GeoTIFF (0 background, 1 object) with the scene's CRS and transform.
  Without ``--prompts`` a semantic checkpoint goes to the tiled predictor.
* :func:`evaluate_checkpoint` (``EVALUATORS``): Dice / IoU of a prompt checkpoint on a scene and its
  footprints (``--option image=... --option labels=...``), or mIoU / Dice of a semantic checkpoint on
  tiles (``--option images=[...] --option masks=[...]``).

Options (``--option k=v``): ``base_checkpoint=PATH`` (the SAM file, if it moved since training),
``context=N`` (window side around a prompt, default the training crop), ``threshold=0.0`` (logit).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geolesf.errors import ConfigError, DataError


def predict_loader(checkpoint: Any, model_name: str | None, options: dict[str, Any]) -> Any:
    from geolesf.models.sam.peft_checkpoint import load_peft_model
    from geolesf.models.sam.stem import scale_to_255
    from geolesf.predict.tiled import PredictModel

    model, payload, digest = load_peft_model(checkpoint, options.get("base_checkpoint"), model_name)
    if payload["mode"] != "semantic":
        raise ConfigError(f"{checkpoint}: a prompt-mode SAM checkpoint needs --prompts (boxes/points vector file)")
    lo, hi = payload["band_lo"].numpy(), payload["band_hi"].numpy()
    return PredictModel(
        module=model, name=payload["model_name"], kind="dense", class_ids=list(payload["class_ids"]),
        class_names=list(payload["class_names"]), colors=list(payload["colors"]), sha256=digest,
        in_bands=len(lo), normalise=lambda x: scale_to_255(x, lo, hi), size_divisor=model.size_divisor,
    )


def _read_prompts(path: str | Path, crs: Any) -> list[tuple[str, np.ndarray]]:
    """``[("box", x0,y0,x1,y1 map coords) | ("point", x,y map coords)]`` in the scene CRS."""
    import warnings

    import geopandas as gpd

    if not Path(path).is_file():
        raise DataError(f"--prompts {path}: file not found")
    frame = gpd.read_file(path)
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    if frame.empty:
        raise DataError(f"--prompts {path}: no geometries")
    if frame.crs is None:
        warnings.warn(f"--prompts {path} has no CRS; assuming the scene's", UserWarning, stacklevel=2)
    elif crs is not None and frame.crs != crs:
        frame = frame.to_crs(crs)
    prompts = []
    for geom in frame.geometry:
        if geom.geom_type == "Point":
            prompts.append(("point", np.array([geom.x, geom.y])))
        else:
            prompts.append(("box", np.asarray(geom.bounds, dtype=np.float64)))
    return prompts


def predict_prompts(scene: str | Path, checkpoint: Any, out: str | Path, prompts: str | Path,
                    options: dict[str, Any] | None = None, device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Prompted SAM on a scene; writes a uint8 mask GeoTIFF (CRS/transform of ``scene``)."""
    import rasterio
    from rasterio.windows import Window
    from tqdm.auto import tqdm

    from geolesf import __version__
    from geolesf.io.writers import write_class_map
    from geolesf.models.sam.peft_checkpoint import load_peft_model
    from geolesf.models.sam.stem import scale_to_255

    options = dict(options or {})
    out = Path(out)
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise DataError(f"--out {out}: expected a .tif path")
    model, payload, digest = load_peft_model(checkpoint, options.get("base_checkpoint"))
    if payload["mode"] != "prompt":
        raise ConfigError(f"{checkpoint}: a semantic SAM checkpoint predicts without --prompts")
    model.to(device)
    lo, hi = payload["band_lo"].numpy(), payload["band_hi"].numpy()
    context = int(options.get("context", payload["extra"].get("crop", model.img_size)))
    threshold = float(options.get("threshold", 0.0))
    if not Path(scene).is_file():
        raise DataError(f"{scene}: scene not found")
    with rasterio.open(scene) as src:
        if src.count != len(lo):
            raise DataError(f"{scene} has {src.count} bands; checkpoint {Path(str(checkpoint)).name} expects {len(lo)}")
        crs, transform, H, W = src.crs, src.transform, src.height, src.width
        mask = np.zeros((H, W), dtype=np.uint8)
        items = _read_prompts(prompts, crs)
        inv = ~transform
        used = 0
        for kind, coords in tqdm(items, desc="prompts", unit="prompt", disable=not progress):
            # pixel indices, inclusive (SAM's box convention); map bounds are pixel edges
            if kind == "box":
                (c0, r0), (c1, r1) = inv @ (coords[0], coords[3]), inv @ (coords[2], coords[1])
                c0, c1, r0, r1 = min(c0, c1), max(c0, c1), min(r0, r1), max(r0, r1)
                c0, r0 = np.floor(c0), np.floor(r0)
                c1, r1 = max(np.ceil(c1) - 1, c0), max(np.ceil(r1) - 1, r0)
            else:
                c0, r0 = (float(np.floor(v)) for v in inv @ (coords[0], coords[1]))
                c1, r1 = c0, r0
            if c1 < 0 or r1 < 0 or c0 >= W or r0 >= H:
                continue
            side = int(min(max(context, 1.25 * max(c1 - c0, r1 - r0)), max(H, W)))
            wy = int(np.clip((r0 + r1) / 2 - side / 2, 0, max(H - side, 0)))
            wx = int(np.clip((c0 + c1) / 2 - side / 2, 0, max(W - side, 0)))
            win = Window(wx, wy, min(side, W - wx), min(side, H - wy))
            x = torch.from_numpy(scale_to_255(src.read(window=win), lo, hi))[None].to(device)
            with torch.inference_mode():
                if kind == "box":
                    box = torch.tensor([[c0 - wx, r0 - wy, c1 - wx, r1 - wy]], dtype=torch.float32)
                    box[:, 0::2] = box[:, 0::2].clamp(0, win.width - 1)
                    box[:, 1::2] = box[:, 1::2].clamp(0, win.height - 1)
                    logits = model.forward_prompted(x, boxes=[box.to(device)])[0]
                else:
                    pt = torch.tensor([[[c0 - wx, r0 - wy]]], dtype=torch.float32, device=device)
                    logits = model.forward_prompted(x, points=[(pt, torch.ones(1, 1, device=device))])[0]
            hit = (logits[0, 0] > threshold).cpu().numpy()
            view = mask[wy:wy + win.height, wx:wx + win.width]
            view[hit] = 1
            used += 1
    if used == 0:
        raise DataError(f"--prompts {prompts}: no prompt falls inside {scene}")
    name = payload["class_names"][0] if payload["class_names"] else "object"
    tags = {"geolesf_version": __version__, "model": payload["model_name"], "weights_sha256": digest,
            "base_sha256": payload["base_sha256"], "prompts": Path(prompts).name, "source": Path(scene).name}
    write_class_map(out, mask, {0: "background", 1: name}, {0: (0, 0, 0), 1: _hex(payload["colors"][0])},
                    crs=crs, transform=transform, nodata=None, tags=tags)
    return {"out": out, "prompts": used, "object_pixels": int(mask.sum()), "height": H, "width": W}


def _hex(c: str) -> tuple[int, int, int]:
    c = c.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def predict_runner(args: argparse.Namespace) -> int:
    """``geolesf predict`` for SAM PEFT checkpoints (prompted masks, or the tiled semantic predictor)."""
    from geolesf.cli.predict import model_options

    options = model_options(args)
    prompts = options.pop("prompts", None)
    if prompts is not None:
        if args.model is not None:
            from geolesf.models.sam.peft_checkpoint import read_peft_payload

            found = read_peft_payload(args.checkpoint)[0]["model_name"]
            if found != args.model:
                raise ConfigError(f"--model {args.model}: {args.checkpoint} holds a '{found}' model")
        r = predict_prompts(args.scene, args.checkpoint, args.out, prompts, options, device=args.device)
        print(f"wrote {r['out']} ({r['width']}×{r['height']} px, {r['prompts']} prompts, "
              f"{r['object_pixels']:,} object px)")
        return 0
    from geolesf.predict.tiled import predict_file

    tiling = {k: getattr(args, k) for k in ("tile", "overlap", "blend") if getattr(args, k, None) is not None}
    tiled = predict_file(args.scene, args.checkpoint, args.out, model_name=args.model, batch_size=args.batch_size,
                         device=args.device, probabilities=args.probabilities, nodata=args.nodata,
                         resume=args.resume, probabilities_dtype="uint8" if args.probabilities_uint8 else "float32",
                         preview=not args.no_preview, options=options, **tiling)
    print(f"wrote {tiled.out} ({tiled.width}×{tiled.height} px, {tiled.tiles_run}/{tiled.tiles} tiles run)")
    return 0


def evaluate_checkpoint(checkpoint: Any, *, dataset: str | None = None, data_root: str | None = None,
                        what: str | None = None, out: str | None = None, device: str = "cpu",
                        batch_size: int | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Dice/IoU (prompt) or mIoU/Dice (semantic) of a SAM PEFT checkpoint; writes a JSON."""
    from geolesf.io.writers import atomic_path
    from geolesf.models.sam.peft_checkpoint import load_peft_model
    from geolesf.models.sam.stem import scale_to_255
    from geolesf.tasks import sam_peft_data as sd
    from geolesf.tasks.sam_peft import evaluate_prompts, evaluate_semantic

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
