"""Backbones and RoI box heads for the WSOD detector.

``vgg16``: torchvision's VGG16 ``features`` arranged as PCL's ``vgg16.dilated_conv5_body``:
pool4 and pool5 removed (replaced by identities so state-dict keys stay torchvision's) and the
conv5 block dilated by 2, giving stride 8 and 512 channels; the box head is ``roi_2mlp_head``:
fc6 (512·7·7 → 4096) and fc7 (4096 → 4096) with ReLU and dropout, initialisable from VGG16's
``classifier.0`` / ``classifier.3``. Weights are optional and read only from a local file
(``backbone_weights``, a torchvision-format VGG16 state dict such as ``vgg16-397923af.pth`` or
PCL's converted ``vgg16_caffe.pth``); nothing is ever downloaded.

``tiny``: three stride-2 convolutions (stride 8, ``width`` channels) and a small 2-layer head,
for tests and CPU demos.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from geolesf.errors import ModelError


class BoxHead(nn.Module):
    """Two fully connected layers on the pooled RoI features (``roi_2mlp_head``)."""

    def __init__(self, in_dim: int, hidden: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_dim, hidden)
        self.fc7 = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out_dim = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(torch.relu(self.fc6(x.flatten(1))))
        return self.dropout(torch.relu(self.fc7(x)))


def vgg16_dilated() -> nn.Sequential:
    from torchvision.models import vgg16

    features = vgg16(weights=None).features
    features[23] = nn.Identity()  # pool4
    features[30] = nn.Identity()  # pool5
    for i in (24, 26, 28):  # conv5_1..3
        conv = features[i]
        conv.dilation, conv.padding = (2, 2), (2, 2)
    return features


def tiny_body(width: int = 32) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, width // 2, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(width // 2, width, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(inplace=True),
    )


def build_backbone(name: str, roi_size: int, hidden: int | None, width: int = 32,
                   dropout: float = 0.5) -> tuple[nn.Module, BoxHead, int, float]:
    """``(body, head, body channels, spatial scale)`` for ``vgg16`` or ``tiny``."""
    if name == "vgg16":
        body, channels = vgg16_dilated(), 512
        hidden = hidden or 4096
    elif name == "tiny":
        body, channels = tiny_body(width), width
        hidden = hidden or 64
    else:
        raise ModelError(f"ndi-wsod: backbone must be 'vgg16' or 'tiny', found '{name}'")
    head = BoxHead(channels * roi_size * roi_size, hidden, dropout)
    return body, head, channels, 1.0 / 8.0


def load_vgg16_weights(body: nn.Module, head: BoxHead, path: str | Path) -> None:
    """Load a local torchvision-format VGG16 state dict into the dilated body and fc6/fc7."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"backbone_weights {path}: file not found (weights are never downloaded; "
                         "put a torchvision VGG16 state dict there)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    feats = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    if not feats:
        raise ModelError(f"backbone_weights {path}: no 'features.*' keys; expected a torchvision VGG16 state dict")
    missing, _ = body.load_state_dict(feats, strict=False)
    if missing:
        raise ModelError(f"backbone_weights {path}: missing VGG16 keys {missing[:3]}")
    if "classifier.0.weight" in state and state["classifier.0.weight"].shape == head.fc6.weight.shape:
        head.fc6.load_state_dict({"weight": state["classifier.0.weight"], "bias": state["classifier.0.bias"]})
        head.fc7.load_state_dict({"weight": state["classifier.3.weight"], "bias": state["classifier.3.bias"]})
