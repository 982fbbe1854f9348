"""The tensor contract shared by every selective-scan backend: shape checks and compute dtype."""

from __future__ import annotations

import torch

from geolesf.errors import ModelError

# log2(e): the scans compute exp(x) as exp2(x * log2(e)).
_LOG2E = 1.4426950408889634


def _check(u, delta, A, B, C, D, delta_bias):
    if u.dim() != 3:
        raise ModelError(f"selective_scan: u must be (batch, K*D, L), got shape {tuple(u.shape)}")
    batch, channels, length = u.shape
    if delta.shape != u.shape:
        raise ModelError(f"selective_scan: delta shape {tuple(delta.shape)} != u shape {tuple(u.shape)}")
    if A.dim() != 2 or A.shape[0] != channels:
        raise ModelError(f"selective_scan: A must be ({channels}, N), got shape {tuple(A.shape)}")
    n_state = A.shape[1]
    if B.dim() == 3:
        B = B.unsqueeze(1)
    if C.dim() == 3:
        C = C.unsqueeze(1)
    for name, t in (("B", B), ("C", C)):
        if t.dim() != 4 or t.shape[0] != batch or t.shape[2] != n_state or t.shape[3] != length:
            raise ModelError(
                f"selective_scan: {name} must be (batch={batch}, K, N={n_state}, L={length}), "
                f"got shape {tuple(t.shape)}"
            )
    if B.shape[1] != C.shape[1]:
        raise ModelError(f"selective_scan: B has {B.shape[1]} groups but C has {C.shape[1]}")
    groups = B.shape[1]
    if channels % groups:
        raise ModelError(f"selective_scan: {channels} channels are not divisible into {groups} groups")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and tuple(t.shape) != (channels,):
            raise ModelError(f"selective_scan: {name} must be ({channels},), got shape {tuple(t.shape)}")
    return B, C


def _compute_dtype(*tensors):
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32
