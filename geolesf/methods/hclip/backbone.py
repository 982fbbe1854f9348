"""CLIP towers for dense prediction: building/loading open_clip models and a dense image forward.

* :func:`build_clip` creates the model with ``open_clip.create_model_and_transforms`` (never a hub
  download: ``pretrained=None``). Real weights come from a **local** OpenAI-format file (``clip.load``
  state dicts or TorchScript archives, or open_clip checkpoints with the same keys:
  ``visual.conv1.weight``, ``visual.transformer.resblocks.{i}.attn.in_proj_weight``,
  ``token_embedding.weight``, …), whose sha256 is checked first when one is given.
* ``tiny=True`` overrides open_clip's own ``ViT-B-16`` config with a small width / depth (tests,
  smoke runs; random init) — still the real open_clip classes, tokenizer and code paths.
* :func:`dense_image_features` runs the ViT on any ``H×W`` that is a multiple of the patch size
  (positional embeddings interpolated bicubically), returning the projected, normalised patch
  embeddings ``(B, E, h, w)`` and the intermediate token maps used as decoder guidance.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from geolesf.errors import ModelError

#: Overrides of open_clip's ViT-B-16 config for the tiny random-init test model.
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with a ``code/`` folder."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.split("/", 1)[-1].startswith("code/") for n in zf.namelist())


def load_clip_state_dict(path: str | Path, sha256: str | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """Read an OpenAI-format CLIP state dict from a local file; returns ``(state_dict, sha256)``.

    ``weights:NAME`` names catalogued weights (``geolesf weights list``), verified against the catalog's sha256.
    """
    from geolesf.data.weights import resolve_spec
    from geolesf.registry import verify_sha256

    path, sha256 = resolve_spec(path, sha256, "model.clip_checkpoint")
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model.clip_checkpoint {path}: file not found (run `geolesf weights fetch "
                         "clip_vit_b16_openai` and set model.clip_checkpoint: weights:clip_vit_b16_openai, or give "
                         "a local OpenAI-format CLIP state dict)")
    digest = verify_sha256(path, sha256)
    try:
        if _is_torchscript(path):  # OpenAI's own ViT-B-16.pt releases (verify them with clip_sha256)
            obj: Any = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise ModelError(f"{path}: not a CLIP state dict or TorchScript archive ({exc.__class__.__name__})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise ModelError(f"{path}: expected a CLIP state dict, found {type(obj).__name__}")
    state = {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}
    for key in ("input_resolution", "context_length", "vocab_size"):
        state.pop(key, None)
    if "visual.conv1.weight" not in state:
        raise ModelError(f"{path}: no 'visual.conv1.weight' key; not an OpenAI/open_clip ViT CLIP state dict")
    return state, digest


def build_clip(model_name: str = "ViT-B-16", checkpoint: str | Path | None = None, sha256: str | None = None,
               *, tiny: bool = False, quick_gelu: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """An open_clip CLIP model (eval mode) and its info: mean/std, tokenizer name, weight sha256."""
    import open_clip

    overrides = dict(TINY_CLIP) if tiny else {}
    logging.getLogger().disabled, was = True, logging.getLogger().disabled  # "no pretrained weights" notice
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=None, force_quick_gelu=quick_gelu, **overrides)
    except RuntimeError as exc:
        raise ModelError(f"model.clip_model '{model_name}': not an open_clip model config ({exc})") from None
    finally:
        logging.getLogger().disabled = was
    info: dict[str, Any] = {"model_name": model_name, "tiny": tiny, "sha256": None,
                            "mean": list(model.visual.preprocess_cfg["mean"]) if hasattr(model.visual, "preprocess_cfg")
                            else [0.48145466, 0.4578275, 0.40821073],
                            "std": list(model.visual.preprocess_cfg["std"]) if hasattr(model.visual, "preprocess_cfg")
                            else [0.26862954, 0.26130258, 0.27577711]}
    del preprocess
    if checkpoint:
        state, info["sha256"] = load_clip_state_dict(checkpoint, sha256)
        from open_clip.factory import resize_pos_embed

        resize_pos_embed(state, model)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ModelError(f"{checkpoint}: does not match open_clip '{model_name}' (missing {list(missing)[:3]}, "
                             f"unexpected {list(unexpected)[:3]})")
    if not isinstance(getattr(model, "visual", None), open_clip.transformer.VisionTransformer):
        raise ModelError(f"model.clip_model '{model_name}': H-CLIP needs a ViT image tower")
    model.eval()
    return model, info


def _interp_pos(pos: torch.Tensor, grid: tuple[int, int], new: tuple[int, int]) -> torch.Tensor:
    """``(1 + g², W)`` positional table → ``(1 + h·w, W)`` for a new patch grid (bicubic)."""
    if grid == new:
        return pos
    cls, rest = pos[:1], pos[1:]
    rest = rest.reshape(1, grid[0], grid[1], -1).permute(0, 3, 1, 2)
    rest = F.interpolate(rest, size=new, mode="bicubic", align_corners=False)
    return torch.cat([cls, rest.permute(0, 2, 3, 1).reshape(new[0] * new[1], -1)], 0)


def dense_image_features(clip: nn.Module, images: torch.Tensor, guidance_layers: tuple[int, ...] = ()
                         ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Normalised patch embeddings ``(B, E, h, w)`` and token maps ``(B, W, h, w)`` of ``guidance_layers``.

    Every token goes through ``ln_post`` and the projection, as in CAT-Seg's dense CLIP features.
    """
    v = clip.visual
    p = v.patch_size[0] if isinstance(v.patch_size, tuple) else int(v.patch_size)
    if images.shape[-1] % p or images.shape[-2] % p:
        raise ModelError(f"hclip: input {tuple(images.shape[-2:])} is not a multiple of the patch size {p}")
    x = v.conv1(images)
    b, w, h, wd = x.shape
    x = x.reshape(b, w, h * wd).permute(0, 2, 1)
    cls = v.class_embedding.to(x.dtype).expand(b, 1, -1)
    x = torch.cat([cls, x], 1) + _interp_pos(v.positional_embedding, tuple(v.grid_size), (h, wd)).to(x.dtype)
    x = v.ln_pre(x)
    batch_first = getattr(v.transformer, "batch_first", True)
    if not batch_first:
        x = x.transpose(0, 1)
    maps: dict[int, torch.Tensor] = {}
    for i, blk in enumerate(v.transformer.resblocks):
        x = blk(x)
        if i in guidance_layers:
            t = x if batch_first else x.transpose(0, 1)
            maps[i] = t[:, 1:].transpose(1, 2).reshape(b, w, h, wd)
    guides = [maps[i] for i in guidance_layers]
    if not batch_first:
        x = x.transpose(0, 1)
    x = v.ln_post(x[:, 1:])
    if v.proj is not None:
        x = x @ v.proj
    x = F.normalize(x, dim=-1)
    return x.transpose(1, 2).reshape(b, -1, h, wd), guides
