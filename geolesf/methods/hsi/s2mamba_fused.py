"""The forward of S²Mamba's PCS and BSS branches without layout copies (CPU, native kernel).

Used by :class:`geolesf.methods.hsi.s2mamba.PCS` / ``BSS`` when the tensors are on the CPU and the
selective-scan backend resolves to ``cpu`` with its native kernel (:func:`use_fused`), in
inference and in training; the ``reference`` backend, ``mamba_ssm`` and CUDA keep the modules'
composed forward. Same mathematics, different data movement:

* ``in_proj``'s x and z halves are two matmuls (no split copy), and the depthwise conv runs on
  channels-last input, so its output ``(B, L, D)`` is the layout every later step reads;
* all K directions' ``x_proj`` is one matmul in position order (the einsum over stacked,
  flipped and transposed copies is gone); each direction's ``dt_proj``, the cross-scan (PCS:
  row-major, column-major, both reversed) or the flip (BSS), the selective scans and the
  cross-merge run in one native call, :func:`geolesf.ops.selective_scan.fused.multi_scan`,
  which reads positions through index tables and sums the directions in the composed forward's
  order (PCS: ``y0 + flip(y2) + T(y1) + T(flip(y3))``); in training its backward is one native
  call too (the adjoint, scattered back to the same positions);
* the merged output comes back in the layout the following LayerNorm reads.

Outputs and gradients agree with the composed forward to float32 rounding
(``tests/methods/hsi/test_s2mamba_fused.py``).
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from geolesf.ops.selective_scan import resolve_backend
from geolesf.ops.selective_scan.fused import fused_scan_available, multi_scan

PCS_MERGE_ORDER = (0, 2, 1, 3)


def use_fused(branch, u: torch.Tensor) -> bool:
    """Whether the copy-free forward applies to this call (see the module docstring)."""
    if u.device.type != "cpu" or u.dtype not in (torch.float32, torch.float64):
        return False
    return resolve_backend(branch.scan_backend, u.device) == "cpu" and fused_scan_available(u.device)


@lru_cache(maxsize=32)
def cross_scan_tables(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PCS's four scan orders as position tables ``(src, dst)``, each (4, h·w): row-major,
    column-major, and both reversed; the merge adds step t back at the position it read."""
    L = h * w
    rows = torch.arange(L, dtype=torch.int32)
    t = torch.arange(L, dtype=torch.int32)
    cols = (t % h) * w + t // h
    src = torch.stack([rows, cols, rows.flip(0), cols.flip(0)])
    return src, src


@lru_cache(maxsize=32)
def spectral_tables(L: int, true_reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """BSS's two directions: forward, and the official "backward" copy (not reversed on input,
    its output flipped) or, with ``true_reverse``, a reversed scan flipped back."""
    fwd = torch.arange(L, dtype=torch.int32)
    rev = fwd.flip(0)
    return torch.stack([fwd, rev if true_reverse else fwd]), torch.stack([fwd, rev])


def front_channels_last(branch, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``in_proj`` → (x, z) → depthwise conv + SiLU on x; x returned as ``(B, H·W, D)``."""
    b, h, w, _ = u.shape
    weight = branch.in_proj.weight
    d = weight.shape[0] // 2
    x = F.linear(u, weight[:d])
    z = F.linear(u, weight[d:])
    x = F.silu(branch.conv2d(x.permute(0, 3, 1, 2)))  # channels-last in, channels-last out
    x = x.permute(0, 2, 3, 1).reshape(b, h * w, d)  # a view when the conv kept channels-last
    return x, z


def _gate(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``gelu(z) * y`` in z's (contiguous) layout; in place on gelu's output when no gradient is kept."""
    g = F.gelu(z)
    return g * y if torch.is_grad_enabled() else g.mul_(y)


def pcs_forward(pcs, u: torch.Tensor) -> torch.Tensor:
    b, h, w, _ = u.shape
    x, z = front_channels_last(pcs, u)
    L, K, D = h * w, pcs.K, pcs.d_inner
    proj = F.linear(x, pcs.x_proj_weight.reshape(-1, D)).view(b, L, K, -1)
    src, dst = cross_scan_tables(h, w)
    y = multi_scan(x.transpose(1, 2), proj, pcs.dt_projs_weight, pcs.dt_projs_bias.reshape(-1),
                         -torch.exp(pcs.A_logs), pcs.Ds, src, dst, PCS_MERGE_ORDER)
    y = pcs.out_norm(y.transpose(1, 2).reshape(b, h, w, D))
    return pcs.dropout(pcs.out_proj(_gate(z, y)))


def bss_forward(bss, u: torch.Tensor) -> torch.Tensor:
    b, h, w, _ = u.shape
    x, z = front_channels_last(bss, u)  # (B, P², 128): channels = positions, sequence = features
    K, L, P2 = bss.K, bss.d_inner, bss.d_spectral
    weight = bss.x_proj_weight_spectral  # (K, R + 2N, P²)
    proj = torch.bmm(weight.reshape(1, -1, P2).expand(b, -1, -1), x)  # (B, K·(R+2N), L), no copy of x
    proj = proj.view(b, K, -1, L).permute(0, 3, 1, 2)  # (B, L, K, R+2N) view
    src, dst = spectral_tables(L, bool(bss.true_reverse))
    y = multi_scan(x, proj, bss.dt_projs_weight_spectral, bss.dt_projs_bias_spectral.reshape(-1),
                         -torch.exp(bss.A_logs_spectral), bss.Ds_spectral, src, dst, (0, 1))
    y = bss.out_norm_spectral(y.transpose(1, 2))  # (B, 128, P²): LayerNorm over the positions
    y = y.transpose(1, 2).reshape(b, h, w, L)  # a view; gelu(z) * y is written in z's layout
    return bss.dropout(bss.out_proj(_gate(z, y)))
