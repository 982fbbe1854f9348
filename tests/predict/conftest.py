"""Fixtures for the tiled predictor: small real scenes and tiny deterministic models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn


class TinyConv(nn.Module):
    """Three 3×3 convolutions: receptive-field radius 3, no pooling (translation equivariant)."""

    def __init__(self, in_chans: int = 3, classes: int = 4, scale: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.in_chans = in_chans
        self.scale = scale
        self.net = nn.Sequential(
            nn.Conv2d(in_chans, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, classes, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * self.scale)


class TinyPatch(nn.Module):
    """A per-pixel patch classifier: (n, bands, P, P) → (n, classes)."""

    def __init__(self, bands: int, patch: int, classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.fc = nn.Linear(bands * patch * patch, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


@pytest.fixture(scope="session")
def rgb_byte(shared_data: Path) -> Path:
    path = shared_data / "rasterio_landsat7" / "RGB.byte.tif"
    assert path.is_file(), f"{path} missing from GEOLESF_DATA"
    return path


@pytest.fixture(scope="session")
def rgb_crop(rgb_byte: Path, tmp_path_factory) -> Path:
    """A 300×260 crop of the real scene with its georeferencing and part of the nodata collar."""
    import rasterio
    from rasterio.windows import Window

    out = tmp_path_factory.mktemp("scenes") / "crop.tif"
    with rasterio.open(rgb_byte) as src:
        win = Window(0, 60, 260, 300)
        profile = src.profile | {"height": 300, "width": 260, "transform": src.window_transform(win)}
        profile.pop("blockxsize", None), profile.pop("blockysize", None)
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read(window=win))
    return out


@pytest.fixture()
def tiny_conv() -> TinyConv:
    return TinyConv(scale=1 / 64).eval()


def whole_scene_probs(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x.astype(np.float32))[None]).softmax(1)[0].numpy()
