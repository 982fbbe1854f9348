"""WSDDN two-stream MIL head (Bilen & Vedaldi, CVPR 2016), as PCL's ``mil_outputs``.

For proposal features ``f (R, D)``: ``mil_score = softmax_c(fc_cls f) ⊙ softmax_r(fc_det f)``
(softmax over classes times softmax over proposals), the image score is the sum over proposals,
and the image-level loss is the multi-label binary cross-entropy of PCL's ``mil_losses``
(scores clamped to ``[1e-6, 1 - 1e-6]``, mean over classes).
"""

from __future__ import annotations

import torch
from torch import nn


class WSDDNHead(nn.Module):
    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc_cls = nn.Linear(in_dim, num_classes)
        self.fc_det = nn.Linear(in_dim, num_classes)
        for fc in (self.fc_cls, self.fc_det):
            nn.init.normal_(fc.weight, std=0.01)
            nn.init.zeros_(fc.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(R, D)`` proposal features → ``(R, C)`` MIL scores (each column sums to ≤ 1)."""
        return torch.softmax(self.fc_cls(features), dim=1) * torch.softmax(self.fc_det(features), dim=0)


def image_scores(mil_score: torch.Tensor) -> torch.Tensor:
    """``(C,)`` image-level class scores: the sum over proposals."""
    return mil_score.sum(dim=0)


def mil_loss(image_score: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Multi-label BCE between image scores ``(C,)`` and 0/1 labels ``(C,)``."""
    p = image_score.clamp(1e-6, 1 - 1e-6)
    labels = labels.to(p.dtype)
    return -(labels * torch.log(p) + (1 - labels) * torch.log(1 - p)).mean()
