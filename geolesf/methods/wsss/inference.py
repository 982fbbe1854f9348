"""WSSS checkpoints in the tiled predictor: seed scores per tile (CAM / USAGE) or segmentation logits.

:func:`predict_model` is this method's :mod:`geolesf.formats` inference entry (``geolesf predict``
routes ``geolesf-wsss/1`` checkpoints to it); ``geolesf pseudo-label`` uses :func:`to_predict_model`
on the loaded bundle. A single-stage checkpoint predicts with its segmentation
head (``stage="final"``, the default for it); CAM and USAGE checkpoints — or ``stage="seeds"`` —
predict seed scores: per tile, the classes the classifier finds present (sigmoid ≥
``presence``, or the fixed ``tags``) get their multi-scale + flip CAMs normalised by the tile
maximum, the background (when the label set has one) the constant ``bg_threshold``; absent
classes score 0 (−1 without background, where a tile with no class above ``presence`` keeps its
likeliest class). Tiles should be about the size of the training images,
since CAMs are normalised per tile.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from geolesf.errors import ConfigError
from geolesf.methods.wsss.cam import class_scores, multiscale_cams
from geolesf.methods.wsss.checkpoint import WSSSBundle
from geolesf.methods.wsss.checkpoint import load as load_wsss_checkpoint

OPTIONS = ("stage", "presence", "tags", "scales", "flip", "bg_threshold")


class SeedScores(nn.Module):
    """``(B, 3, H, W)`` normalised images → seed scores ``(B, K, H, W)`` (see the module docstring)."""

    def __init__(self, net: nn.Module, bg_threshold: float | None, scales: Sequence[float] = (1.0,),
                 flip: bool = True, presence: float = 0.5, tags: torch.Tensor | None = None) -> None:
        super().__init__()
        self.net, self.bg_threshold = net, bg_threshold
        self.scales, self.flip, self.presence = tuple(scales), bool(flip), float(presence)
        self.register_buffer("tags", tags if tags is not None else torch.zeros(0), persistent=False)
        self.size_divisor = net.size_divisor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tags.numel():
            labels = self.tags.to(x.dtype)[None].expand(x.shape[0], -1)
        else:
            prob = torch.sigmoid(self.net(x))
            labels = (prob >= self.presence).to(x.dtype)
            if self.bg_threshold is None:  # no background class: every tile holds at least its likeliest class
                top = torch.zeros_like(labels).scatter_(1, prob.argmax(1, keepdim=True), 1.0)
                labels = torch.where(labels.sum(1, keepdim=True) > 0, labels, top)
        cams = multiscale_cams(self.net, x, scales=self.scales, flip=self.flip)
        return class_scores(cams, labels, self.bg_threshold)


def seed_module(bundle: WSSSBundle, options: dict[str, Any]) -> SeedScores:
    unknown = sorted(set(options) - set(OPTIONS) - {"classes", "prompts"})
    if unknown:
        raise ConfigError(f"--option {unknown[0]}: unknown for wsss checkpoints (known: {', '.join(OPTIONS)})")
    tags = None
    if options.get("tags"):
        names = options["tags"]
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else [str(n) for n in names]
        fg = bundle.fg_names
        lower = [f.lower() for f in fg]
        tags = torch.zeros(len(fg))
        for n in names:
            if n.lower() not in lower:
                raise ConfigError(f"--tags: unknown class '{n}' (classes: {', '.join(fg)})")
            tags[lower.index(n.lower())] = 1.0
    bg = options.get("bg_threshold", bundle.cam.get("bg_threshold")) if bundle.background else None
    return SeedScores(bundle.cam_net, bg, scales=options.get("scales", (1.0,)), flip=options.get("flip", True),
                      presence=float(options.get("presence", 0.5)), tags=tags).eval()


def to_predict_model(bundle: WSSSBundle, options: dict[str, Any] | None = None) -> Any:
    """A :class:`geolesf.predict.model.PredictModel` for the bundle (seed scores or segmentation logits)."""
    from geolesf.predict.model import PredictModel

    options = dict(options or {})
    stage = options.get("stage", "final" if bundle.method == "single-stage" else "seeds")
    if stage == "final":
        if bundle.method != "single-stage":
            raise ConfigError(f"--option stage=final needs a single-stage checkpoint (this one is '{bundle.method}')")
        module: nn.Module = bundle.model.eval()
    elif stage == "seeds":
        module = seed_module(bundle, {k: v for k, v in options.items() if k != "stage"})
    else:
        raise ConfigError(f"--option stage must be 'seeds' or 'final', found '{stage}'")
    mean = np.asarray(bundle.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(bundle.std, dtype=np.float32)[:, None, None]

    def normalise(x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float32) / 255.0 - mean) / std).astype(np.float32)

    return PredictModel(
        module=module, name=f"wsss-{bundle.method}-{bundle.model_args.get('backbone', '')}", kind="dense",
        class_ids=list(bundle.class_ids), class_names=list(bundle.class_names), colors=list(bundle.colors),
        sha256=bundle.sha256, in_bands=3, normalise=normalise, size_divisor=int(bundle.cam_net.size_divisor),
        normalisation={"kind": "bands", "dtype": "float32", "divide": 255.0, "band_mean": mean.ravel().tolist(),
                       "band_std": std.ravel().tolist()},
    )


def predict_model(checkpoint: Any, model_name: str | None, options: dict[str, Any]) -> Any:
    """The :mod:`geolesf.formats` inference entry: checkpoint → PredictModel (``options``: see :data:`OPTIONS`)."""
    return to_predict_model(load_wsss_checkpoint(checkpoint), options)
