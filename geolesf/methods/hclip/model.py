"""``hclip``: H-CLIP open-vocabulary semantic segmentation (methods.md §1).

CLIP (open_clip, both towers frozen) + block-diagonal orthogonal fine-tuning of q/k/v in every
block of both encoders with the dual cross-relation module (:mod:`geolesf.peft.orthogonal`),
trainable positional embeddings, and a CAT-Seg-style cost-aggregation head
(:mod:`geolesf.methods.hclip.cost_aggregation`). Images go in normalised with CLIP's mean/std;
class names go in as text, so the same weights segment any list of classes.

``forward(images, class_names=None)`` → logits ``(B, C, H, W)`` at the input size (bilinear
upsampling of the head's ``4×`` patch-grid output). With ``class_names=None`` the classes set with
:meth:`HCLIPSegmenter.set_classes` are used (what the tiled predictor relies on).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from geolesf.errors import ConfigError, ModelError
from geolesf.methods.hclip.backbone import build_clip, dense_image_features
from geolesf.methods.hclip.cost_aggregation import CostAggregationHead
from geolesf.methods.hclip.prompts import build_prompts, get_templates
from geolesf.peft.orthogonal import apply_orthogonal_peft, frozen_in_proj, parameter_report
from geolesf.registry import register_model


def default_guidance_layers(depth: int, count: int) -> tuple[int, ...]:
    """Evenly spaced intermediate blocks (ViT-B/16, 2 guides → blocks 3 and 7, CAT-Seg's choice)."""
    return tuple(max(0, round(depth * (k + 1) / (count + 1)) - 1) for k in range(count))


class HCLIPSegmenter(nn.Module):
    """Open-vocabulary segmenter: H-CLIP fine-tuned CLIP + cost-aggregation head."""

    def __init__(self, clip_model: str = "ViT-B-16", clip_checkpoint: str | None = None,
                 clip_sha256: str | None = None, *, tiny: bool = False, quick_gelu: bool = True,
                 block_size: int = 32, image_transform: str = "cayley", text_transform: str = "cayley",
                 cross_modal: bool = True, cross_layer: bool = True, train_positional: bool = True,
                 templates: str | Sequence[str] = "single", hidden: int = 128, guidance_dim: int = 128,
                 text_guidance_dim: int = 128, agg_layers: int = 2, heads: int = 4,
                 decoder_dims: Sequence[int] = (64, 32), decoder_guidance_dims: Sequence[int] = (256, 128),
                 guidance_layers: Sequence[int] | None = None,
                 class_names: Sequence[str] | None = None) -> None:
        super().__init__()
        import open_clip

        self.clip, self.clip_info = build_clip(clip_model, clip_checkpoint, clip_sha256, tiny=tiny,
                                               quick_gelu=quick_gelu)
        self.relation = apply_orthogonal_peft(self.clip, block_size, image_transform=image_transform,
                                              text_transform=text_transform, cross_modal=cross_modal,
                                              cross_layer=cross_layer, train_positional=train_positional)
        self.tokenizer = open_clip.get_tokenizer(clip_model)
        self.templates = get_templates(templates if isinstance(templates, str) else list(templates))
        v = self.clip.visual
        self.patch_size = int(v.patch_size[0] if isinstance(v.patch_size, tuple) else v.patch_size)
        self.size_divisor = self.patch_size
        width = v.transformer.width
        depth = len(v.transformer.resblocks)
        n_guides = len(decoder_dims) if decoder_guidance_dims else 0
        self.guidance_layers = tuple(int(i) for i in guidance_layers) if guidance_layers is not None \
            else default_guidance_layers(depth, n_guides)
        if any(i < 0 or i >= depth for i in self.guidance_layers):
            raise ModelError(f"hclip: guidance_layers {list(self.guidance_layers)} outside 0..{depth - 1}")
        embed_dim = int(self.clip.text_projection.shape[1])
        self.head = CostAggregationHead(
            embed_dim, width, len(self.templates), hidden=hidden, guidance_dim=guidance_dim,
            text_guidance_dim=text_guidance_dim, layers=agg_layers, heads=heads, decoder_dims=decoder_dims,
            decoder_guidance_dims=decoder_guidance_dims, decoder_guidance=bool(decoder_guidance_dims))
        if self.head.guidance_count != len(self.guidance_layers):
            raise ModelError(f"hclip: {len(self.guidance_layers)} guidance_layers for "
                             f"{self.head.guidance_count} decoder guidance stages")
        self.register_buffer("mean", torch.tensor(self.clip_info["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.clip_info["std"]).view(1, 3, 1, 1), persistent=False)
        self.class_names: list[str] = list(class_names or [])
        self._text_cache: tuple[tuple[str, ...], torch.Tensor] | None = None

    # ---------------------------------------------------------------------------------------- text
    def set_classes(self, class_names: Sequence[str]) -> None:
        names = [str(n) for n in class_names]
        if not names:
            raise ConfigError("classes: expected at least one class name")
        self.class_names = names
        self._text_cache = None

    def text_embeddings(self, class_names: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings ``(C, P, E)`` (cached in eval mode)."""
        key = tuple(class_names)
        if not self.training and self._text_cache is not None and self._text_cache[0] == key:
            return self._text_cache[1]
        tokens = self.tokenizer(build_prompts(key, self.templates)).to(self.mean.device)
        emb = F.normalize(self.clip.encode_text(tokens), dim=-1)
        emb = emb.reshape(len(key), len(self.templates), -1)
        if not self.training:
            self._text_cache = (key, emb.detach())
        return emb

    def train(self, mode: bool = True) -> HCLIPSegmenter:
        self._text_cache = None
        return super().train(mode)

    # ---------------------------------------------------------------------------------------- image
    def forward(self, images: torch.Tensor, class_names: Sequence[str] | None = None) -> torch.Tensor:
        names = list(class_names) if class_names is not None else self.class_names
        if not names:
            raise ConfigError("hclip: no class names (pass class_names or call set_classes)")
        txt = self.text_embeddings(names)
        img, guides = dense_image_features(self.clip, images, self.guidance_layers)
        logits = self.head(img, txt, guides)
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def normalise_uint8(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` 0..255 → CLIP-normalised float input."""
        return (images.float() / 255.0 - self.mean) / self.std

    # ---------------------------------------------------------------------------------------- PEFT
    def text_energy_penalty(self) -> torch.Tensor:
        """Relative hyperspherical-energy change of the text q/k/v weights (zero for Cayley blocks)."""
        return self.relation.text_energy_penalty(list(frozen_in_proj(self.clip, "text")))

    def parameter_report(self) -> dict[str, Any]:
        return parameter_report(self.clip, self.relation, self.head)

    def frozen_keys(self) -> list[str]:
        """State-dict keys of frozen CLIP tensors (restored from the CLIP checkpoint, not saved per run)."""
        trainable = {id(p) for p in self.parameters() if p.requires_grad}
        keys = []
        for name, t in self.state_dict(keep_vars=True).items():
            if name.startswith("clip.") and id(t) not in trainable:
                keys.append(name)
        return keys


@register_model("hclip", method="hclip", kind="dense")
def hclip(**kwargs: Any) -> HCLIPSegmenter:
    """H-CLIP open-vocabulary segmenter (open_clip CLIP + orthogonal PEFT + cost aggregation)."""
    return HCLIPSegmenter(**kwargs)
