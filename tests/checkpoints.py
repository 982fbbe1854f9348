"""Small, seeded checkpoints the tests build in the official geolesf formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def seeded_unet_checkpoint(path: Path) -> Path:
    """A 4-class unet (base 4, depth 2) for RGB scenes, initialised with seed 0: the same bytes every run."""
    from geolesf.methods.unet.checkpoint import SegmentationCheckpoint, save
    from geolesf.methods.unet.model import unet

    torch.manual_seed(0)
    args = dict(in_chans=3, num_classes=4, base=4, depth=2)
    save(path, SegmentationCheckpoint(
        model=unet(**args).eval(), model_name="unet", model_args=args,
        band_mean=np.array([60, 55, 50], np.float32), band_std=np.array([30, 30, 30], np.float32),
        class_ids=[1, 2, 3, 4], class_names=["water", "forest", "field", "urban"],
        colors=["#1f78b4", "#33a02c", "#ffff99", "#e31a1c"]))
    return path
