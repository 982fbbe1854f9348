"""Band-adapter stem: any number of raster bands → the 3-channel 0–255 image SAM expects.

SAM was pretrained on 8-bit RGB normalised by ``pixel_mean`` / ``pixel_std``. Remote-sensing
rasters are 1-band panchromatic (uint16), 4-band RGB+NIR (float) or more. geolesf puts a small
stem in front of SAM:

1. **Per-band scaling** to 0–255 with robust limits: ``(x − lo) / (hi − lo) · 255`` clipped, where
   ``lo`` / ``hi`` are the 2nd / 98th percentiles of each band on the training image (stored in
   the PEFT checkpoint so prediction applies the same scaling).
2. **Band mixing** to three channels:

   * 3 bands: identity (no parameters);
   * 1 band: the band repeated three times (no parameters);
   * 2 or ≥ 4 bands: a learnable 1×1 convolution ``bands → 3`` (``3·bands + 3`` parameters),
     initialised to pick ``rgb_bands`` (default the first three; for a 4-band R,G,B,NIR raster
     such as SpaceNet's ``ms1.tif`` that is RGB, and NIR starts with weight 0), so at
     initialisation SAM sees the RGB composite and training can mix NIR in. It is trained with
     the PEFT parameters and saved with them.

The stem is not folded into the dense SAM export (SAM keeps its 3-channel patch embedding).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from geolesf.errors import ConfigError, DataError


class BandStem(nn.Module):
    """``(B, bands, H, W)`` in 0–255 → ``(B, 3, H, W)`` in 0–255."""

    def __init__(self, in_bands: int = 3, rgb_bands: Sequence[int] | None = None) -> None:
        super().__init__()
        if in_bands < 1:
            raise ConfigError(f"model.args.in_bands must be ≥ 1, found {in_bands}")
        self.in_bands = int(in_bands)
        picks = list(rgb_bands) if rgb_bands is not None else [0, 1, 2]
        self.mix: nn.Conv2d | None = None
        if in_bands in (1, 3):
            return
        if len(picks) != 3 or any(not 0 <= b < in_bands for b in picks):
            raise ConfigError(f"model.args.rgb_bands must name 3 band indices in 0..{in_bands - 1}, found {picks}")
        self.mix = nn.Conv2d(in_bands, 3, 1)
        with torch.no_grad():
            self.mix.weight.zero_()
            self.mix.bias.zero_()
            for c, b in enumerate(picks):
                self.mix.weight[c, b] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_bands:
            raise DataError(f"input has {x.shape[1]} bands; the SAM stem expects {self.in_bands}")
        if self.mix is not None:
            return self.mix(x)
        if self.in_bands == 1:
            return x.expand(-1, 3, -1, -1)
        return x


def band_limits(image: np.ndarray, valid: np.ndarray | None = None, low: float = 2.0,
                high: float = 98.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-band ``(lo, hi)`` percentiles of a ``(bands, H, W)`` image over its valid pixels."""
    image = np.asarray(image, dtype=np.float64)
    flat = image.reshape(image.shape[0], -1)
    if valid is not None:
        flat = flat[:, np.asarray(valid).ravel()]
    if flat.shape[1] == 0:
        raise DataError("no valid pixels to compute the band scaling from")
    lo = np.percentile(flat, low, axis=1)
    hi = np.percentile(flat, high, axis=1)
    hi = np.where(hi > lo, hi, lo + 1.0)
    return lo.astype(np.float32), hi.astype(np.float32)


def scale_to_255(image: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``(bands, H, W)`` raw → float32 0–255 with the stored per-band limits."""
    image = np.asarray(image, dtype=np.float32)
    if image.shape[0] != len(lo):
        raise DataError(f"image has {image.shape[0]} bands; the band scaling was fitted on {len(lo)}")
    out = (image - lo[:, None, None]) / (hi - lo)[:, None, None] * 255.0
    return np.clip(out, 0.0, 255.0).astype(np.float32)
