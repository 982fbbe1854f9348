"""Single-stage WSSS: classification and segmentation branches trained jointly (methods.md §8).

One backbone feeds (1) the CAM classifier trained on image tags, (2) a segmentation head and
(3) an embedding head. Every step, pseudo labels are made online from the (detached) CAMs:
normalised CAMs of the tagged classes + a constant background score, **refined** by a random
walk with an affinity (the Transformer's own attention, or the embedding affinity within
``radius`` for CNNs), then arg-maxed with an ignore band of uncertain pixels. The loss is

    L = L_cls + L_seg(CE on confident pseudo labels) + λ₁·L_AA + λ₂·L_LR

with the adaptive affinity loss on the embeddings (:mod:`geolesf.losses.affinity`) and the
label-reassign loss (:mod:`geolesf.losses.reassign`). Deviations from the paper (whose code is
not public): the backbone defaults to a torchvision ResNet or the toolkit's ViT instead of
WideResNet-38, the refinement is an affinity random walk instead of PAMR, and the
segmentation head is a light 3×3 conv head at the backbone stride instead of DeepLab's ASPP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from geolesf.errors import ConfigError
from geolesf.methods.wsss.cam import CAMNet, class_scores, normalise_cams, scores_to_seeds
from geolesf.losses.affinity import adaptive_affinity_loss, attention_affinity, embedding_affinity, random_walk
from geolesf.losses.reassign import label_reassign_loss

REFINEMENTS = ("auto", "attention", "embedding", "none")


@dataclass
class SingleStageOptions:
    """Loss and pseudo-label settings (the ``single_stage:`` section of a wsss config)."""

    bg_threshold: float | None = 0.3
    margin: float = 0.1
    """Pixels whose best-vs-second score margin is below this are ignored (uncertain)."""
    refine: str = "auto"
    """auto (attention for ViT, embedding affinity for CNNs) | attention | embedding | none."""
    refine_beta: float = 2.0
    refine_iters: int = 2
    attention_layers: int = 4
    radius: float = 5.0
    gamma: float = 2.0
    lambda_aa: float = 1.0
    lambda_lr: float = 1.0
    lr_temperature: float = 0.1
    lr_threshold: float = 0.9
    warmup_steps: int = 0
    """Steps trained with L_cls only before the segmentation losses start."""


class SingleStageWSSS(nn.Module):
    """A :class:`CAMNet` plus segmentation and embedding heads on the shared feature map."""

    def __init__(self, cam: CAMNet, seg_classes: int, embed_dim: int = 64, hidden: int = 128) -> None:
        super().__init__()
        d = cam.backbone.out_dim
        self.cam = cam
        self.seg_head = nn.Sequential(
            nn.Conv2d(d, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, seg_classes, 1),
        )
        self.embed_head = nn.Conv2d(d, embed_dim, 1)
        self.seg_classes = seg_classes
        self.size_divisor = cam.size_divisor
        self.stride = cam.stride

    def forward_all(self, x: torch.Tensor) -> dict[str, Any]:
        feats, attns = self.cam.features(x)
        maps = self.cam.classifier(feats)
        return {"maps": maps, "logits": self.cam.pool_logits(maps), "seg": self.seg_head(feats),
                "emb": self.embed_head(feats), "attn": attns}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segmentation logits at the input resolution ``(B, K, H, W)``."""
        seg = self.seg_head(self.cam.features(x)[0])
        return F.interpolate(seg, size=x.shape[-2:], mode="bilinear", align_corners=False)


def refined_scores(maps: torch.Tensor, labels: torch.Tensor, opts: SingleStageOptions, *,
                   attn: list[torch.Tensor] | None = None, emb: torch.Tensor | None = None,
                   is_transformer: bool = False) -> torch.Tensor:
    """Class scores ``(B, K, h, w)`` of detached, normalised CAMs, refined by an affinity random walk."""
    scores = class_scores(normalise_cams(maps.detach()), labels, opts.bg_threshold)
    mode = opts.refine
    if mode not in REFINEMENTS:
        raise ConfigError(f"single_stage.refine must be one of {', '.join(REFINEMENTS)}, found '{mode}'")
    if mode == "auto":
        mode = "attention" if is_transformer and attn else ("embedding" if emb is not None else "none")
    if mode == "none" or opts.refine_iters <= 0:
        return scores
    if mode == "attention":
        aff = attention_affinity([a.detach() for a in attn or []], layers=opts.attention_layers)
    else:
        if emb is None:
            raise ConfigError("single_stage.refine=embedding needs the embedding head")
        aff = embedding_affinity(emb.detach(), radius=opts.radius)
    return random_walk(scores, aff, beta=opts.refine_beta, iters=opts.refine_iters)


def pseudo_labels(out: dict[str, Any], labels: torch.Tensor, opts: SingleStageOptions,
                  is_transformer: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pseudo labels (B, h, w) with 255 = uncertain, confidence (B, h, w))`` at the feature resolution."""
    scores = refined_scores(out["maps"], labels, opts, attn=out["attn"], emb=out["emb"],
                            is_transformer=is_transformer)
    return scores_to_seeds(scores, opts.margin)


def single_stage_loss(model: SingleStageWSSS, images: torch.Tensor, labels: torch.Tensor,
                      opts: SingleStageOptions, step: int = 10**9) -> dict[str, torch.Tensor]:
    """All loss terms for one batch; ``loss`` is the total."""
    out = model.forward_all(images)
    cls = F.multilabel_soft_margin_loss(out["logits"], labels.float())
    parts: dict[str, torch.Tensor] = {"cls": cls}
    zero = cls.detach() * 0.0
    if step < opts.warmup_steps:
        parts.update(seg=zero, aa=zero, lr=zero, reassigned=zero, loss=cls)
        return parts
    pseudo, _ = pseudo_labels(out, labels, opts, model.cam.is_transformer)
    seg = F.cross_entropy(out["seg"], pseudo, ignore_index=255) if (pseudo != 255).any() else out["seg"].sum() * 0.0
    bg = 0 if opts.bg_threshold is not None else None
    aa = adaptive_affinity_loss(out["emb"], pseudo, radius=opts.radius, gamma=opts.gamma, bg_index=bg)
    allowed = labels > 0
    if opts.bg_threshold is not None:
        allowed = torch.cat([torch.ones_like(allowed[:, :1]), allowed], 1)
    lr, moved = label_reassign_loss(out["seg"], out["emb"], pseudo, allowed, temperature=opts.lr_temperature,
                                    threshold=opts.lr_threshold)
    parts.update(seg=seg, aa=aa, lr=lr, reassigned=moved.float().mean().detach())
    parts["loss"] = cls + seg + opts.lambda_aa * aa + opts.lambda_lr * lr
    return parts


@torch.no_grad()
def segment(model: SingleStageWSSS, images: torch.Tensor, flip: bool = True) -> torch.Tensor:
    """Final segmentation probabilities ``(B, K, H, W)`` (softmax, averaged with the flipped input)."""
    prob = model(images).softmax(1)
    if flip:
        prob = 0.5 * (prob + model(images.flip(-1)).softmax(1).flip(-1))
    return prob
