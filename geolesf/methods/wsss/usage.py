"""USAGE — unified seed-area generation for CNN and Transformer CAMs (methods.md §5).

``L = L_gen(τ) + λ · L_reg``:

* **generation loss** — class scores pooled from the class maps with a softmax over pixels at
  temperature τ, ``s_c = Σ_p softmax_p(M_c/τ) · M_c(p)`` (τ → ∞: average pooling, which rewards
  large activated areas; τ → 0: max pooling, which rewards compact ones), trained with the
  multi-label soft-margin loss against the image tags. The deterministic rule per backbone type
  is τ_CNN > τ_ViT (defaults 1.0 and 0.1: spread CNN activation, concentrate Transformer
  activation).
* **regularisation loss** — equivariance consistency between the seeds of two views,
  ``M₁ = CAM(x)``, ``M₂ = A⁻¹(CAM(A(x)))``, ``L_reg = mean |M₁ − M₂|`` over the pixels of the
  image's labelled classes (max-normalised CAMs). "Self-adaptive network adjustment": the second
  view runs with stochastic depth (ViT, rate ``drop_path``) / feature dropout (CNN) active, the
  first view without (option ``adjust``; the exact mechanism is NOT FOUND, this is the spec's option).

Seeds: normalised CAM argmax with a background threshold, 0.55 for Transformers and 0.15 for
CNNs (:func:`default_bg_threshold`).

Deviation, documented: the pooling acts on the class maps *before* the ReLU (``w_cᵀ f``), not on
``ReLU(w_cᵀ f)``: after a ReLU an absent class could never receive a negative score, so the
soft-margin loss could not push it below 0.5. The CAM itself is still ``ReLU(w_cᵀ f)``.
The paper's exact formulas are not public (methods.md: NOT FOUND); these are the spec's choices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.nn import functional as F

from geolesf.errors import ConfigError
from geolesf.methods.wsss.cam import normalise_cams, temperature_pool

AUGMENTATIONS = ("flip", "rescale", "flip_rescale", "identity")


def default_tau(is_transformer: bool) -> float:
    """The per-backbone temperature rule: τ_ViT = 0.1 < τ_CNN = 1.0."""
    return 0.1 if is_transformer else 1.0


def default_bg_threshold(is_transformer: bool) -> float:
    return 0.55 if is_transformer else 0.15


def generation_loss(maps: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    """Multi-label soft-margin loss of the temperature-pooled scores against ``labels`` ``(B, C)`` ∈ {0, 1}."""
    return F.multilabel_soft_margin_loss(temperature_pool(maps, tau), labels.float())


def make_view(kind: str, scale: float = 0.5) -> tuple[Callable[[torch.Tensor], torch.Tensor],
                                                      Callable[[torch.Tensor, tuple[int, int]], torch.Tensor]]:
    """``(A, A⁻¹)`` for an augmentation: ``A`` acts on images, ``A⁻¹(maps, size)`` maps CAMs back."""
    if kind not in AUGMENTATIONS:
        raise ConfigError(f"usage.augmentation must be one of {', '.join(AUGMENTATIONS)}, found '{kind}'")
    flip = kind in ("flip", "flip_rescale")
    rescale = kind in ("rescale", "flip_rescale")

    def forward(x: torch.Tensor) -> torch.Tensor:
        if rescale:
            x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False, recompute_scale_factor=False)
        return x.flip(-1) if flip else x

    def inverse(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if flip:
            maps = maps.flip(-1)
        if tuple(maps.shape[-2:]) != tuple(size):
            maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
        return maps

    return forward, inverse


def regularisation_loss(m1: torch.Tensor, m2: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean ``|M₁ − M₂|`` over the pixels of every (image, labelled class) pair; 0 without labels."""
    diff = (m1 - m2).abs().mean((-2, -1))  # (B, C)
    mask = labels > 0
    if not mask.any():
        return diff.sum() * 0.0
    return diff[mask].mean()


def usage_loss(model: Any, images: torch.Tensor, labels: torch.Tensor, *, tau: float, lam: float = 1.0,
               augmentation: str = "flip_rescale", scale: float = 0.5, adjust: bool = True) -> dict[str, torch.Tensor]:
    """``L_gen(τ) + λ·L_reg`` for a :class:`~geolesf.methods.wsss.cam.CAMNet`; returns the parts and the logits."""
    maps1 = model.cam_logits(images)
    gen = generation_loss(maps1, labels, tau)
    out = {"gen": gen, "logits": temperature_pool(maps1, tau)}
    if lam > 0:
        forward, inverse = make_view(augmentation, scale)
        x2 = forward(images)
        d = max(1, getattr(model, "size_divisor", 1))
        if x2.shape[-1] % d or x2.shape[-2] % d:
            h, w = (max(d, s // d * d) for s in x2.shape[-2:])
            x2 = F.interpolate(x2, size=(h, w), mode="bilinear", align_corners=False)
        maps2 = inverse(model.cam_logits(x2, adjust=adjust), tuple(maps1.shape[-2:]))
        reg = regularisation_loss(normalise_cams(maps1), normalise_cams(maps2), labels)
        out["reg"] = reg
        out["loss"] = gen + lam * reg
    else:
        out["reg"] = gen.detach() * 0.0
        out["loss"] = gen
    return out
