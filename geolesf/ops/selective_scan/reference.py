"""The ``reference`` backend: the recurrence written out, differentiated by autograd."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from geolesf.ops.selective_scan.contract import _check, _compute_dtype


def selective_scan_reference(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False):
    """The recurrence as written: loop over time, autograd for gradients."""
    B, C = _check(u, delta, A, B, C, D, delta_bias)
    dtype = _compute_dtype(u, delta, A, B, C, D, delta_bias)
    u, delta, A, B, C = (t.to(dtype) for t in (u, delta, A, B, C))
    channels = u.shape[1]
    per_group = channels // B.shape[1]
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    # groups -> channels: (batch, K, N, L) -> (batch, K*D, N, L)
    Bc = B.repeat_interleave(per_group, dim=1)
    Cc = C.repeat_interleave(per_group, dim=1)
    h = u.new_zeros(u.shape[0], channels, A.shape[1])
    ys = []
    # unbind (rather than x[..., t]) so autograd does not build a full-size gradient per step
    for dt, u_t, B_t, C_t in zip(delta.unbind(-1), u.unbind(-1), Bc.unbind(-1), Cc.unbind(-1)):
        dt = dt[:, :, None]  # (batch, K*D, 1)
        h = torch.exp(dt * A) * h + dt * B_t * u_t[:, :, None]
        ys.append((h * C_t).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D.to(dtype)[:, None] * u
    return y
