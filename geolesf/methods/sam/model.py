"""SAM with a PEFT method applied, for prompted or semantic segmentation of rasters.

:class:`SamSegmenter` holds an unmodified ``segment_anything`` SAM (whose image encoder the PEFT
method rewrites in place), the :class:`~geolesf.methods.sam.stem.BandStem` and the head mode:

* ``prompt``: SAM's own mask decoder (``multimask_output=False``, as SAM-COBOT's
  ``semantic_mask_decoder`` head) predicts one mask per box / point prompt;
* ``semantic``: a multi-class head on the mask decoder. SAM is built with
  ``num_multimask_outputs = C − 1`` so the decoder has ``C`` mask tokens; without prompts (the
  prompt encoder's "no prompt" embeddings) token ``c`` produces the logit map of class ``c``. The
  extra tokens start from the pretrained ones (see :func:`~geolesf.methods.sam.build.load_into_sam`).

Registered models (``geolesf.create_model``): ``sam-parser`` (SVD singular values,
:mod:`geolesf.peft.svd_coeff`), ``sam-cobo`` (cross-block orchestration on an ``adapter`` or
``lora`` host, :mod:`geolesf.peft.cross_block`), and the plain ``sam-lora`` / ``sam-adapter``
baselines through the same code path. Prompt encoder always frozen; mask decoder trainable when
``train_decoder`` (both official scripts train it), frozen for the "PEFT-only" variant.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from geolesf.errors import ConfigError, DataError
from geolesf.methods.sam.build import build_sam_model, load_into_sam, load_sam_state
from geolesf.methods.sam.stem import BandStem
from geolesf.peft.cross_block import apply_cross_block
from geolesf.peft.svd_coeff import svd_reparameterise, train_singular_values_only
from geolesf.registry import register_model

METHODS = ("parser", "cobo", "lora", "adapter", "full", "decoder")
MODES = ("prompt", "semantic")


def apply_method(sam: nn.Module, method: str, *, host: str = "adapter", rank: int | None = None,
                 scope: str = "neck", ratio: float = 1.0, rank_multiple: int = 4,
                 train_decoder: bool = True, lora_init: str = "official") -> dict[str, Any]:
    """Rewrite ``sam.image_encoder`` for ``method`` and set ``requires_grad``; returns what was done.

    ``lora_init`` (LoRA host): ``official`` (xavier-normal A and B, the official ``init_weights``) or
    ``zero_b`` (deviation: B = 0, so the initial model equals frozen SAM).
    """
    if method not in METHODS:
        raise ConfigError(f"SAM PEFT method must be one of {', '.join(METHODS)}, found '{method}'")
    enc = sam.image_encoder
    base = {id(p) for p in sam.parameters()}
    for p in sam.parameters():
        p.requires_grad_(False)
    info: dict[str, Any] = {"method": method}
    if method == "parser":
        info["ranks"] = svd_reparameterise(enc, scope, ratio, rank_multiple)
        info["scope"] = scope
        train_singular_values_only(enc)
    elif method in ("cobo", "lora", "adapter"):
        host = method if method in ("lora", "adapter") else host
        apply_cross_block(enc, host, relation=method == "cobo", rank=rank, lora_init=lora_init)
        for p in enc.parameters():
            if id(p) not in base:
                p.requires_grad_(True)
        info["host"] = host
        if host == "lora":
            info["lora_init"] = lora_init
    elif method == "full":
        for p in enc.parameters():
            p.requires_grad_(True)
    if train_decoder or method == "decoder":
        for p in sam.mask_decoder.parameters():
            p.requires_grad_(True)
    info["train_decoder"] = bool(train_decoder or method == "decoder")
    return info


class SamSegmenter(nn.Module):
    """SAM + band stem + head mode; inputs are raster bands already scaled to 0–255."""

    def __init__(self, sam: nn.Module, stem: BandStem, mode: str, num_classes: int, info: dict[str, Any]) -> None:
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"model.args.mode must be one of {', '.join(MODES)}, found '{mode}'")
        self.sam = sam
        self.stem = stem
        self.mode = mode
        self.num_classes = num_classes
        self.info = info
        self.in_chans = stem.in_bands
        # Any tile size works (inputs are resized to SAM's square input); tiles of whole patches are cleaner.
        self.size_divisor = 16
        self.base_sha256: str | None = None

    @property
    def img_size(self) -> int:
        return int(self.sam.image_encoder.img_size)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the tensors that training changes (``requires_grad``), detached on the CPU."""
        return {n: p.detach().cpu().clone() for n, p in self.named_parameters() if p.requires_grad}

    # ---------------------------------------------------------------------------------------
    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, float, tuple[int, int]]:
        """Stem, SAM normalisation, resize of the longest side to ``img_size``, pad; → embeddings."""
        if x.ndim != 4:
            raise DataError(f"expected a (B, bands, H, W) batch, found shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        x = self.stem(x)
        x = (x - self.sam.pixel_mean) / self.sam.pixel_std
        scale = self.img_size / max(h, w)
        nh, nw = int(round(h * scale)), int(round(w * scale))
        if (nh, nw) != (h, w):
            x = F.interpolate(x, (nh, nw), mode="bilinear", align_corners=False, antialias=scale < 1)
        x = F.pad(x, (0, self.img_size - nw, 0, self.img_size - nh))
        return self.sam.image_encoder(x), scale, (nh, nw)

    def _upscale(self, low: torch.Tensor, resized: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
        masks = F.interpolate(low, (self.img_size, self.img_size), mode="bilinear", align_corners=False)
        masks = masks[..., : resized[0], : resized[1]]
        return F.interpolate(masks, size, mode="bilinear", align_corners=False)

    def forward_prompted(self, x: torch.Tensor, boxes: Sequence[torch.Tensor | None] | None = None,
                         points: Sequence[tuple[torch.Tensor, torch.Tensor] | None] | None = None
                         ) -> list[torch.Tensor]:
        """One ``(N_i, 1, H, W)`` logit map per image, one mask per prompt.

        ``boxes[i]``: ``(N_i, 4)`` x0, y0, x1, y1 in input pixels; ``points[i]``: coordinates
        ``(N_i, P, 2)`` (x, y) and labels ``(N_i, P)`` (1 foreground, 0 background).
        """
        emb, scale, resized = self._encode(x)
        size = tuple(x.shape[-2:])
        pe = self.sam.prompt_encoder.get_dense_pe()
        out = []
        for i in range(x.shape[0]):
            b = boxes[i] * scale if boxes is not None and boxes[i] is not None else None
            p = None
            if points is not None and points[i] is not None:
                p = (points[i][0] * scale, points[i][1])
            if b is None and p is None:
                raise DataError(f"image {i} of the batch has no prompt")
            sparse, dense = self.sam.prompt_encoder(points=p, boxes=b, masks=None)
            low, _ = self.sam.mask_decoder(image_embeddings=emb[i:i + 1], image_pe=pe, sparse_prompt_embeddings=sparse,
                                           dense_prompt_embeddings=dense, multimask_output=False)
            out.append(self._upscale(low, resized, size))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Semantic mode: ``(B, bands, H, W)`` → ``(B, C, H, W)`` class logits."""
        if self.mode != "semantic":
            raise ConfigError("this SAM model was built for prompts (mode 'prompt'); use forward_prompted")
        emb, _, resized = self._encode(x)
        size = tuple(x.shape[-2:])
        pe = self.sam.prompt_encoder.get_dense_pe()
        sparse, dense = self.sam.prompt_encoder(points=None, boxes=None, masks=None)
        lows = [self.sam.mask_decoder.predict_masks(emb[i:i + 1], pe, sparse, dense)[0] for i in range(x.shape[0])]
        return self._upscale(torch.cat(lows, 0), resized, size)


def build_sam_segmenter(method: str, *, variant: str = "vit_b", checkpoint: str | None = None,
                        checkpoint_sha256: str | None = None, mode: str = "prompt", num_classes: int = 1,
                        in_bands: int = 3, rgb_bands: Sequence[int] | None = None, train_decoder: bool = True,
                        host: str = "adapter", rank: int | None = None, scope: str = "neck",
                        ratio: float = 1.0, rank_multiple: int = 4, shape: dict[str, Any] | None = None,
                        lora_init: str = "official") -> SamSegmenter:
    """Build SAM (``variant``), load ``checkpoint`` (sha256-checked), apply ``method``.

    ``mode='semantic'`` needs ``num_classes ≥ 2``; ``shape`` overrides SAM widths (tests);
    ``lora_init`` (``official`` | ``zero_b``) picks the LoRA-host initialisation (YAML ``model.args``).
    Without ``checkpoint`` the weights are random (parameter counting, tests).
    """
    if mode == "semantic" and num_classes < 2:
        raise ConfigError(f"semantic SAM needs at least 2 classes, found num_classes={num_classes}")
    multimask = num_classes - 1 if mode == "semantic" else 3
    sam = build_sam_model(variant, num_multimask_outputs=multimask, **(shape or {}))
    digest = None
    if checkpoint:
        state, digest = load_sam_state(checkpoint, checkpoint_sha256)
        load_into_sam(sam, state, str(checkpoint))
        del state
    info = apply_method(sam, method, host=host, rank=rank, scope=scope, ratio=ratio, rank_multiple=rank_multiple,
                        train_decoder=train_decoder, lora_init=lora_init)
    info.update(variant=variant, checkpoint=Path(checkpoint).name if checkpoint else None)
    model = SamSegmenter(sam, BandStem(in_bands, rgb_bands), mode, num_classes if mode == "semantic" else 1, info)
    model.base_sha256 = digest
    return model


@register_model("sam-parser", method="sam", kind="prompted")
def sam_parser(**kwargs: Any) -> SamSegmenter:
    """SAM-PARSER: SAM fine-tuned through the singular values of its weights (scope neck/all_conv/...)."""
    return build_sam_segmenter("parser", **kwargs)


@register_model("sam-cobo", method="sam", kind="prompted")
def sam_cobo(host: str = "adapter", **kwargs: Any) -> SamSegmenter:
    """SAM with cross-block orchestration (relation matrix + quaternion projector) on an adapter/lora host."""
    return build_sam_segmenter("cobo", host=host, **kwargs)


@register_model("sam-lora", method="sam", kind="prompted")
def sam_lora(**kwargs: Any) -> SamSegmenter:
    """SAM with plain LoRA (rank 4 on q and v), the cross-block baseline."""
    kwargs.pop("host", None)
    return build_sam_segmenter("lora", **kwargs)


@register_model("sam-adapter", method="sam", kind="prompted")
def sam_adapter(**kwargs: Any) -> SamSegmenter:
    """SAM with plain MLP adapters (bottleneck 16), the cross-block baseline."""
    kwargs.pop("host", None)
    return build_sam_segmenter("adapter", **kwargs)
