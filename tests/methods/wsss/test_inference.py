"""Seed scores per tile for the tiled predictor (presence detection, fixed tags, fallback)."""

from __future__ import annotations

import torch

from geolesf.methods.wsss.inference import SeedScores
from geolesf.registry import create_model


def test_seed_scores_use_detected_or_fixed_classes():
    torch.manual_seed(0)
    net = create_model("cam", num_classes=3, backbone="simple", width=4, depth=2).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fixed = SeedScores(net, bg_threshold=0.2, tags=torch.tensor([0.0, 1.0, 0.0]))(x)
        assert fixed.shape == (2, 4, 32, 32)
        assert torch.all(fixed[:, 0] == 0.2) and torch.all(fixed[:, 1] == 0) and torch.all(fixed[:, 3] == 0)
        detected = SeedScores(net, bg_threshold=0.2, presence=0.0)(x)  # every class counts as present
        assert torch.all(detected[:, 1:].amax((-2, -1)) > 0.9)


def test_without_background_the_likeliest_class_is_kept():
    torch.manual_seed(1)
    net = create_model("cam", num_classes=3, backbone="simple", width=4, depth=2).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        scores = SeedScores(net, bg_threshold=None, presence=1.1)(x)  # nothing passes the threshold
        likeliest = torch.sigmoid(net(x)).argmax(1)
    competing = (scores > -0.5).flatten(2).any(-1)
    assert competing.sum(1).tolist() == [1, 1]
    assert competing.float().argmax(1).tolist() == likeliest.tolist()
