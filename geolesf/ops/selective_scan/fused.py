"""Multi-direction inference scan: several scan directions of one branch in one native call.

:func:`multi_scan_infer` runs K selective scans that share one input ``x`` but read it in
different orders (a cross-scan over a patch, a flipped sequence), computes each direction's
``delta`` from a low-rank projection itself (Mamba's ``dt_proj``), and sums the K outputs back
in position order (the cross-merge). The orders are index patterns (``src``/``dst``) read inside
the C kernel (``scan_kernel_fused.h``): no direction is ever materialised, and ``x``, the
projections and the output are read and written through their strides.

It is an inference path (no gradients): the caller (S²Mamba under ``torch.no_grad`` /
``torch.inference_mode``) keeps its composed path for training and for other backends.
Equivalent, to rounding, to::

    for i, k in enumerate(korder):
        xs = x[:, :, src[k]]                                  # (batch, Dk, L) in scan order
        p = proj[:, src[k], k]                                # (batch, L, R + 2N)
        delta = einsum("blr,dr->bdl", p[..., :R], dt_weight[k])
        yk = selective_scan(xs, delta, A[k*Dk:(k+1)*Dk], B=p[..., R:R+N].mT, C=p[..., R+N:].mT,
                            D=D[k*Dk:(k+1)*Dk], delta_bias=dt_bias[k*Dk:(k+1)*Dk], delta_softplus)
        y[:, :, dst[k]] = yk if i == 0 else y[:, :, dst[k]] + yk

(``tests/ops/test_selective_scan_fused.py`` checks exactly this against the ``reference`` backend.)
"""

from __future__ import annotations

import ctypes

import torch

from geolesf.errors import ModelError
from geolesf.ops.selective_scan.contract import _LOG2E
from geolesf.ops.selective_scan.native import (
    _NATIVE,
    _n_parts,
    _ptr,
    _run_parallel,
    native_kernel_available,
)


def fused_scan_available(device: torch.device | str = "cpu") -> bool:
    """Whether :func:`multi_scan_infer` can run for tensors on ``device`` (CPU and the native kernel)."""
    return torch.device(device).type == "cpu" and native_kernel_available()


def _index_table(rows, K: int, L: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(rows, dtype=torch.int32).contiguous()
    if tuple(t.shape) != (K, L):
        raise ModelError(f"multi_scan_infer: {name} must be ({K}, {L}), got shape {tuple(t.shape)}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= L):
        raise ModelError(f"multi_scan_infer: {name} holds positions outside 0..{L - 1}")
    return t


def _check(x, proj, dt_weight, dt_bias, A, D, korder):
    if x.dim() != 3 or proj.dim() != 4 or dt_weight.dim() != 3 or A.dim() != 2:
        raise ModelError("multi_scan_infer: expected x (batch, Dk, L), proj (batch, L, K, R+2N), "
                         "dt_weight (K, Dk, R), A (K*Dk, N)")
    batch, Dk, L = x.shape
    K, _, R = dt_weight.shape
    N = A.shape[1]
    if tuple(dt_weight.shape) != (K, Dk, R) or R < 1:
        raise ModelError(f"multi_scan_infer: dt_weight must be ({K}, {Dk}, R >= 1), got {tuple(dt_weight.shape)}")
    if tuple(proj.shape) != (batch, L, K, R + 2 * N):
        raise ModelError(f"multi_scan_infer: proj must be ({batch}, {L}, {K}, {R + 2 * N}), "
                         f"got {tuple(proj.shape)}")
    if tuple(A.shape) != (K * Dk, N):
        raise ModelError(f"multi_scan_infer: A must be ({K * Dk}, {N}), got {tuple(A.shape)}")
    for name, t in (("D", D), ("dt_bias", dt_bias)):
        if t is not None and tuple(t.shape) != (K * Dk,):
            raise ModelError(f"multi_scan_infer: {name} must be ({K * Dk},), got {tuple(t.shape)}")
    if sorted(int(k) for k in korder) != list(range(K)):
        raise ModelError(f"multi_scan_infer: korder must be a permutation of 0..{K - 1}, got {list(korder)}")
    if x.dtype not in (torch.float32, torch.float64):
        raise ModelError(f"multi_scan_infer: x must be float32 or float64, got {x.dtype}")
    return batch, Dk, L, K, R, N


def multi_scan_infer(x, proj, dt_weight, dt_bias, A, D, src, dst, korder, delta_softplus=True):
    """K scan directions over one input, summed back in position order (inference only).

    x          : (batch, Dk, L), any strides: channel d of every direction reads x[:, d, position]
    proj       : (batch, L, K, R + 2N), any strides: per position and direction the R inputs of the
                 dt projection, then B (N), then C (N) (a view of the x_proj output)
    dt_weight  : (K, Dk, R) (Mamba's dt_proj weights); dt_bias, D: (K*Dk,) or None; A: (K*Dk, N)
    src, dst   : (K, L) integer tables: direction k reads position src[k][t] at step t and adds its
                 output to position dst[k][t]
    korder     : the order in which the directions are summed (the model's merge order)
    returns    : (batch, Dk, L) in x's dtype, laid out as a contiguous (batch, L, Dk) tensor

    Runs the native kernel on CPU tensors over batch ranges on ``torch.get_num_threads()``
    threads. The projections are computed in ``x``'s dtype (float32 or float64).
    """
    if not fused_scan_available(x.device):
        raise ModelError("multi_scan_infer needs CPU tensors and the native selective-scan kernel")
    batch, Dk, L, K, R, N = _check(x, proj, dt_weight, dt_bias, A, D, korder)
    dtype = x.dtype
    src_t, dst_t = _index_table(src, K, L, "src"), _index_table(dst, K, L, "dst")
    order = torch.as_tensor([int(k) for k in korder], dtype=torch.int32)
    proj = proj.to(dtype)
    wdt = dt_weight.to(dtype).contiguous()
    A2 = (A.to(dtype) * _LOG2E).contiguous()
    Dv = None if D is None else D.to(dtype).contiguous()
    bias = None if dt_bias is None else dt_bias.to(dtype).contiguous()
    y = x.new_empty(batch, L, Dk).transpose(1, 2)
    lib = _NATIVE["lib"]
    fn = lib.gl_scan_fused_f32 if dtype == torch.float32 else lib.gl_scan_fused_f64
    sx = (ctypes.c_int64 * 3)(*x.stride())
    sp = (ctypes.c_int64 * 4)(*proj.stride())
    sy = (ctypes.c_int64 * 3)(*y.stride())
    softplus = int(bool(delta_softplus))

    def work(_, b0, b1):
        return fn(x.data_ptr(), ctypes.addressof(sx), proj.data_ptr(), ctypes.addressof(sp), wdt.data_ptr(),
                  _ptr(bias), softplus, A2.data_ptr(), _ptr(Dv), src_t.data_ptr(), dst_t.data_ptr(),
                  order.data_ptr(), y.data_ptr(), ctypes.addressof(sy), b0, b1, K, Dk, L, R, N)

    if any(_run_parallel(work, batch, _n_parts(batch))):
        raise MemoryError("native multi-direction scan: out of memory")
    return y
