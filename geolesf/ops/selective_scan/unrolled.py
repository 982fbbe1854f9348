"""The ``unrolled`` backend: the recurrence laid out for tracing into an ONNX graph (``geolesf export-model``).

Same contract and result as ``reference`` (``__init__.py``), written so that ``torch.onnx.export``
unrolls it into few, contiguous operations per step: the inputs are laid out time-major once
(``(L, batch, K, D, ·)``, so a step reads one contiguous slab), the groups of ``B``/``C`` broadcast
over their ``D`` channels instead of being repeated per channel, and ``y_t = h_t · C_t`` is one batched
matrix product. Per step: ``h = exp(dt·A) * h + (dt·u) * B_t`` and that product. In onnxruntime this runs
about 6× faster than the traced ``reference`` loop on S²Mamba's PCS shape (batch 256, 4×128 channels, N 16,
L 49). It is a plain Python loop over L, for short sequences; autograd works but nothing is fused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from geolesf.ops.selective_scan.contract import _check, _compute_dtype


def selective_scan_unrolled(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False):
    """The recurrence step by step, time-major, groups broadcast (see the module docstring)."""
    B, C = _check(u, delta, A, B, C, D, delta_bias)
    dtype = _compute_dtype(u, delta, A, B, C, D, delta_bias)
    u, delta, A, B, C = (t.to(dtype) for t in (u, delta, A, B, C))
    batch, channels, length = u.shape
    groups, n_state = B.shape[1], A.shape[1]
    per_group = channels // groups
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    dt = delta.reshape(batch, groups, per_group, length).permute(3, 0, 1, 2).unsqueeze(-1)  # (L, b, K, D, 1)
    du = (delta * u).reshape(batch, groups, per_group, length).permute(3, 0, 1, 2).unsqueeze(-1)
    b_t = B.permute(3, 0, 1, 2).unsqueeze(3)  # (L, b, K, 1, N)
    c_t = C.permute(3, 0, 1, 2).unsqueeze(-1)  # (L, b, K, N, 1)
    a = A.reshape(groups, per_group, n_state)
    h = None
    ys = []
    for t in range(length):
        inc = du[t] * b_t[t]  # (b, K, D, N)
        h = inc if h is None else torch.exp(dt[t] * a) * h + inc
        ys.append(torch.matmul(h, c_t[t]))  # (b, K, D, 1)
    y = torch.cat(ys, dim=-1).reshape(batch, channels, length)
    if D is not None:
        y = y + D.to(dtype)[:, None] * u
    return y
