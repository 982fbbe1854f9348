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


class TinyPatchNet(torch.nn.Module):
    """A tiny per-pixel patch classifier (3×3 conv, mean pool, linear) for hsi run tests."""

    def __init__(self, in_chans: int, num_classes: int, patch_size: int = 5) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(in_chans, 8, 3, padding=1)
        self.head = torch.nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def register_tiny_patch_net(name: str) -> str:
    """Register :class:`TinyPatchNet` as hsi model ``name`` (kind ``pixel``) once; returns the name."""
    from geolesf.registry import list_models, register_model

    if name not in list_models():
        register_model(name, method="hsi", kind="pixel")(
            lambda in_chans, num_classes, patch_size=5: TinyPatchNet(in_chans, num_classes, patch_size))
    return name


def tiny_wsss_checkpoint(out: Path, seg_tiles: Path, max_steps: int = 5, batch_size: int = 8,
                         method: str = "cam") -> Path:
    """A CAM (or ``method``) run (8-wide simple backbone) of a few steps on the LoveDA tiles of ``seg_tiles``;
    its ``model.pt``."""
    from geolesf.config import load_config
    from geolesf.methods.wsss.train import CONFIG, run_config

    cfg = load_config(CONFIG, initial={
        "task": "wsss", "out": str(out), "method": method,
        "model": {"backbone": "simple", "args": {"width": 8, "depth": 3}},
        "data": {"dataset": "loveda", "root": str(seg_tiles), "crop": 64,
                 "scale_range": [1.0, 1.0], "options": {"tile": 64, "downsample": 4}},
        "cam": {"scales": [1.0], "margin": 0.1},
        "trainer": {"max_steps": max_steps, "batch_size": batch_size, "lr": 0.01, "accelerator": "cpu",
                    "evaluate": False},
    })
    run_config(cfg)
    return Path(out) / "model.pt"
