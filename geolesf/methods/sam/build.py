"""Build SAM with ``segment_anything``'s own modules; load and save checkpoints in the official format.

The official sizes (``vit_b``, ``vit_l``, ``vit_h``) come from
``segment_anything.sam_model_registry`` itself; other shapes (``tiny`` for tests, or a
different number of mask tokens for the semantic head) are assembled from the same
``segment_anything.modeling`` classes with the exact recipe of ``segment_anything.build_sam._build_sam``,
only with other widths. An official checkpoint is a plain state dict (``image_encoder.*``,
``prompt_encoder.*``, ``mask_decoder.*``); :func:`save_sam_checkpoint` writes that format and
:func:`load_sam_state` reads it with ``weights_only=True`` after checking its sha256.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geolesf.errors import ConfigError, ModelError


@dataclass(frozen=True)
class SamShape:
    """Every width that ``_build_sam`` fixes, so small variants can be built the same way."""

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    img_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_hidden_dim: int = 256


#: Shapes of the official checkpoints (``segment_anything/build_sam.py``) and a tiny test model.
SAM_SHAPES: dict[str, SamShape] = {
    "vit_b": SamShape(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": SamShape(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": SamShape(1280, 32, 16, (7, 15, 23, 31)),
    "tiny": SamShape(32, 2, 2, (1,), img_size=128, window_size=4, prompt_embed_dim=32, mask_in_chans=8,
                     decoder_depth=1, decoder_mlp_dim=64, decoder_num_heads=2, iou_head_hidden_dim=32),
}

#: Official file names, for messages and docs (``segment_anything`` README).
OFFICIAL_FILES = {"vit_b": "sam_vit_b_01ec64.pth", "vit_l": "sam_vit_l_0b3195.pth", "vit_h": "sam_vit_h_4b8939.pth"}


def sam_shape(variant: str, **overrides: Any) -> SamShape:
    if variant not in SAM_SHAPES:
        raise ConfigError(f"model.args.variant: unknown SAM variant '{variant}' (known: {', '.join(SAM_SHAPES)})")
    shape = SAM_SHAPES[variant]
    if overrides:
        bad = [k for k in overrides if k not in asdict(shape)]
        if bad:
            raise ConfigError(f"SAM shape override '{bad[0]}' is not a SAM width (known: {', '.join(asdict(shape))})")
        shape = replace(shape, **{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
    return shape


def build_sam_model(variant: str = "vit_b", num_multimask_outputs: int = 3, **overrides: Any) -> nn.Module:
    """A randomly initialised ``segment_anything.modeling.Sam`` of ``variant`` (no weights loaded).

    The official sizes with the official head are built by ``sam_model_registry[variant]()``;
    anything else by the same recipe from ``segment_anything.modeling``.
    """
    from segment_anything import sam_model_registry

    shape = sam_shape(variant, **overrides)
    if variant in OFFICIAL_FILES and not overrides and num_multimask_outputs == 3:
        return sam_model_registry[variant](checkpoint=None)
    return _build(shape, num_multimask_outputs)


def _build(s: SamShape, num_multimask_outputs: int) -> nn.Module:
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    if num_multimask_outputs < 1:
        raise ConfigError(f"SAM needs at least one multimask output, found {num_multimask_outputs}")
    if s.img_size % s.patch_size:
        raise ConfigError(f"SAM img_size {s.img_size} is not a multiple of the patch size {s.patch_size}")
    emb = s.img_size // s.patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=s.encoder_depth, embed_dim=s.encoder_embed_dim, img_size=s.img_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=s.encoder_num_heads,
            patch_size=s.patch_size, qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=tuple(s.encoder_global_attn_indexes), window_size=s.window_size,
            out_chans=s.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=s.prompt_embed_dim, image_embedding_size=(emb, emb),
            input_image_size=(s.img_size, s.img_size), mask_in_chans=s.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=num_multimask_outputs,
            transformer=TwoWayTransformer(depth=s.decoder_depth, embedding_dim=s.prompt_embed_dim,
                                          mlp_dim=s.decoder_mlp_dim, num_heads=s.decoder_num_heads),
            transformer_dim=s.prompt_embed_dim, iou_head_depth=3, iou_head_hidden_dim=s.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    sam.eval()
    return sam


def save_sam_checkpoint(sam: nn.Module, path: str | Path) -> str:
    """Write ``sam.state_dict()`` as the official checkpoint format (plain state dict); returns sha256."""
    from geolesf.registry import write_checkpoint

    return write_checkpoint(path, {k: v.detach().cpu() for k, v in sam.state_dict().items()})


def load_sam_state(path: str | Path, sha256: str | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """Read an official SAM checkpoint (``weights_only=True``): ``(state dict, sha256)``.

    ``sha256`` given: the file must match it (:class:`ChecksumError` otherwise). ``weights:NAME`` names
    catalogued weights (``geolesf weights list``), verified against the catalog's or pinned sha256.
    """
    from geolesf.data.weights import resolve_spec
    from geolesf.registry import verify_sha256

    path, sha256 = resolve_spec(path, sha256, "model.checkpoint")
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(f"{path}: SAM checkpoint not found (run `geolesf weights fetch sam_vit_b` and set "
                         "model.checkpoint: weights:sam_vit_b, or pass the path of an official SAM checkpoint)")
    digest = verify_sha256(path, sha256)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise ModelError(f"{path}: not a readable SAM checkpoint ({exc.__class__.__name__})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not any(str(k).startswith("image_encoder.") for k in state):
        raise ModelError(f"{path}: expected a SAM state dict with image_encoder.* keys")
    return state, digest


def load_into_sam(sam: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Load an official state dict into ``sam``, adapting the mask-token head when its size differs.

    With ``num_multimask_outputs`` ≠ 3 (semantic head with ``C`` classes) the ``mask_tokens``
    rows, ``output_hypernetworks_mlps`` and the last IoU-head layer are initialised by cycling
    the pretrained ones (token ``k`` ← pretrained token ``k mod 4``); everything else must match.
    """
    target = sam.state_dict()
    state = dict(state)
    n_tokens = sam.mask_decoder.num_mask_tokens
    src_tokens = state.get("mask_decoder.mask_tokens.weight")
    if src_tokens is not None and src_tokens.shape[0] != n_tokens:
        k_src = src_tokens.shape[0]
        idx = torch.arange(n_tokens) % k_src
        state["mask_decoder.mask_tokens.weight"] = src_tokens[idx]
        last = f"mask_decoder.iou_prediction_head.layers.{len(sam.mask_decoder.iou_prediction_head.layers) - 1}"
        for suffix in (".weight", ".bias"):
            if last + suffix in state:
                state[last + suffix] = state[last + suffix][idx]
        prefix = "mask_decoder.output_hypernetworks_mlps."
        hyper = {k: v for k, v in state.items() if k.startswith(prefix)}
        for k in hyper:
            del state[k]
        for t in range(n_tokens):
            for k, v in hyper.items():
                rest = k[len(prefix):].split(".", 1)
                if int(rest[0]) == t % k_src:
                    state[f"{prefix}{t}.{rest[1]}"] = v
    bad = [k for k, v in state.items() if k in target and tuple(target[k].shape) != tuple(v.shape)]
    if bad:
        raise ModelError(f"{where}: {bad[0]} has shape {tuple(state[bad[0]].shape)}, the model expects "
                         f"{tuple(target[bad[0]].shape)} (wrong SAM variant?)")
    missing, unexpected = sam.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelError(f"{where}: not a checkpoint of this SAM variant (missing {list(missing)[:2]}, "
                         f"unexpected {list(unexpected)[:2]})")
