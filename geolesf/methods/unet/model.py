"""``unet``: a fast dense baseline segmenter.

Two back ends behind one registry name:

* the default compact U-Net written here (``base`` channels, ``depth`` poolings, BatchNorm,
  bilinear up-sampling) — about 0.1–2 M parameters, quick on a CPU, no downloads;
* ``encoder="resnet18"`` (any segmentation_models_pytorch encoder) builds ``smp.Unet`` with
  random encoder weights (never downloads), for users who want the standard architecture.

Dense models map ``(B, bands, H, W)`` to ``(B, classes, H, W)`` logits; ``size_divisor`` tells
the tiled predictor which tile sizes the model accepts.
"""

from __future__ import annotations


import torch
from torch import nn
from torch.nn import functional as F

from geolesf.errors import ModelError
from geolesf.registry import register_model

def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class CompactUNet(nn.Module):
    """U-Net with ``depth`` poolings; channel widths ``base·2^k``."""

    def __init__(self, in_chans: int, num_classes: int, base: int = 16, depth: int = 3) -> None:
        super().__init__()
        if in_chans < 1 or num_classes < 1 or base < 1 or depth < 0:
            raise ModelError(f"unet: bad arguments in_chans={in_chans} num_classes={num_classes} "
                             f"base={base} depth={depth}")
        widths = [base * 2**k for k in range(depth + 1)]
        self.enc = nn.ModuleList([_block(in_chans, widths[0])])
        self.enc.extend(_block(widths[k - 1], widths[k]) for k in range(1, depth + 1))
        self.dec = nn.ModuleList(_block(widths[k + 1] + widths[k], widths[k]) for k in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.size_divisor = 2**depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for k, block in enumerate(self.enc):
            if k:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()
        for block in self.dec:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return self.head(x)


@register_model("unet", method="unet", kind="dense")
def unet(in_chans: int = 3, num_classes: int = 2, base: int = 16, depth: int = 3,
         encoder: str | None = None) -> nn.Module:
    """Dense U-Net segmenter (compact built-in, or smp.Unet with ``encoder=``), logits (B, C, H, W)."""
    if encoder is None:
        return CompactUNet(in_chans, num_classes, base=base, depth=depth)
    import segmentation_models_pytorch as smp

    model = smp.Unet(encoder_name=encoder, encoder_weights=None, in_channels=in_chans, classes=num_classes)
    model.size_divisor = 32
    return model


# --------------------------------------------------------------------------------------------
# checkpoint
