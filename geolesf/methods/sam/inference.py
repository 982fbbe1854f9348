"""Inference of ``geolesf-sam-peft/1`` checkpoints (evaluation: :mod:`geolesf.methods.sam.evaluate`).

* :func:`predict_model`: a *semantic* checkpoint as a dense
  :class:`~geolesf.predict.model.PredictModel`, so the tiled, streaming predictor writes a
  georeferenced class COG.
* :func:`run`: ``geolesf predict SCENE --checkpoint peft.pt
  --prompts boxes.gpkg --out mask.tif`` — one mask per prompt (polygons/boxes → box prompts, points →
  point prompts; reprojected to the scene CRS), each predicted on a window around its prompt and
  merged into a uint8 mask GeoTIFF (0 background, 1 object) with the scene's CRS and transform.
  Without ``--prompts`` a semantic checkpoint goes to the tiled predictor.

Options (``--option k=v``): ``base_checkpoint=PATH`` (the SAM file, if it moved since training),
``context=N`` (window side around a prompt, default the training crop), ``threshold=0.0`` (logit).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from geolesf.errors import ConfigError, DataError, ModelError


def predict_model(checkpoint: Any, model_name: str | None, options: dict[str, Any]) -> Any:
    from geolesf.methods.sam.checkpoint import load as load_peft_model
    from geolesf.methods.sam.stem import scale_to_255
    from geolesf.predict.model import PredictModel

    model, payload, digest = load_peft_model(checkpoint, options.get("base_checkpoint"), model_name)
    try:  # a malformed payload (keys missing, values of the wrong type) is one line naming the file
        if payload["mode"] != "semantic":
            raise ConfigError(f"{checkpoint}: a prompt-mode SAM checkpoint needs --prompts (boxes/points vector file)")
        lo, hi = payload["band_lo"].numpy(), payload["band_hi"].numpy()
        return PredictModel(
            module=model, name=payload["model_name"], kind="dense", class_ids=list(payload["class_ids"]),
            class_names=list(payload["class_names"]), colors=list(payload["colors"]), sha256=digest,
            in_bands=len(lo), normalise=lambda x: scale_to_255(x, lo, hi), size_divisor=model.size_divisor,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelError(f"{checkpoint}: malformed checkpoint ({exc.__class__.__name__}: {str(exc)[:200]})") from None


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
    from geolesf.colors import hex_to_rgb
    from geolesf.io.writers import write_class_map
    from geolesf.methods.sam.checkpoint import load as load_peft_model
    from geolesf.methods.sam.stem import scale_to_255

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
    write_class_map(out, mask, {0: "background", 1: name}, {0: (0, 0, 0), 1: hex_to_rgb(payload["colors"][0])},
                    crs=crs, transform=transform, nodata=None, tags=tags)
    return {"out": out, "prompts": used, "object_pixels": int(mask.sum()), "height": H, "width": W}


def run(request: Any) -> int:
    """``geolesf predict`` for SAM PEFT checkpoints (prompted masks, or the tiled semantic predictor)."""
    options = dict(request.options)
    prompts = options.pop("prompts", None)
    if prompts is None:
        from geolesf.predict.tiled import predict_request

        tiled = predict_request(request)
        print(f"wrote {tiled.out} ({tiled.width}×{tiled.height} px, {tiled.tiles_run}/{tiled.tiles} tiles run)")
        return 0
    if request.model_name is not None:
        from geolesf.methods.sam.checkpoint import read_peft_payload

        found = read_peft_payload(request.checkpoint)[0]["model_name"]
        if found != request.model_name:
            raise ConfigError(f"--model {request.model_name}: {request.checkpoint} holds a '{found}' model")
    r = predict_prompts(request.scene, request.checkpoint, request.out, prompts, options, device=request.device)
    print(f"wrote {r['out']} ({r['width']}×{r['height']} px, {r['prompts']} prompts, "
          f"{r['object_pixels']:,} object px)")
    return 0
