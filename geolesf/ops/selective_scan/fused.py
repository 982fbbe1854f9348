"""Multi-direction scan: several scan directions of one branch in one native call.

:func:`multi_scan` (and its no-gradient form :func:`multi_scan_infer`) runs K selective scans that share one input ``x`` but read it in
different orders (a cross-scan over a patch, a flipped sequence), computes each direction's
``delta`` from a low-rank projection itself (Mamba's ``dt_proj``), and sums the K outputs back
in position order (the cross-merge). The orders are index patterns (``src``/``dst``) read inside
the C kernel (``scan_kernel_fused.h``): no direction is ever materialised, and ``x``, the
projections and the output are read and written through their strides.

When a gradient is needed, :func:`multi_scan` goes through an autograd Function whose backward
is one native call as well (``gl_scan_fused_grad``). CPU tensors and the native kernel only
(:func:`fused_scan_available`); S²Mamba keeps its composed forward elsewhere.
Equivalent, to rounding, to::

    for i, k in enumerate(korder):
        xs = x[:, :, src[k]]                                  # (batch, Dk, L) in scan order
        p = proj[:, src[k], k]                                # (batch, L, R + 2N)
        delta = einsum("blr,dr->bdl", p[..., :R], dt_weight[k])
        yk = selective_scan(xs, delta, A[k*Dk:(k+1)*Dk], B=p[..., R:R+N].mT, C=p[..., R+N:].mT,
                            D=D[k*Dk:(k+1)*Dk], delta_bias=dt_bias[k*Dk:(k+1)*Dk], delta_softplus)
        y[:, :, dst[k]] = yk if i == 0 else y[:, :, dst[k]] + yk

(``tests/ops/test_selective_scan_fused.py`` checks exactly this, outputs and gradients, against the
``reference`` backend.)
"""

from __future__ import annotations

import ctypes

import torch

from geolesf.errors import ModelError
from geolesf.ops.selective_scan.contract import _LOG2E
from geolesf.ops.selective_scan.native import (
    _n_parts,
    _ptr,
    native_kernel_available,
    run_kernel,
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


def _strides(t, n):
    return (ctypes.c_int64 * n)(*t.stride())


def _prepare(x, proj, dt_weight, dt_bias, A, D, src, dst, korder):
    batch, Dk, L, K, R, N = _check(x, proj, dt_weight, dt_bias, A, D, korder)
    dtype = x.dtype
    tables = (_index_table(src, K, L, "src"), _index_table(dst, K, L, "dst"),
              torch.as_tensor([int(k) for k in korder], dtype=torch.int32))
    params = (proj.to(dtype), dt_weight.to(dtype).contiguous(),
              None if dt_bias is None else dt_bias.to(dtype).contiguous(),
              (A.to(dtype) * _LOG2E).contiguous(), None if D is None else D.to(dtype).contiguous())
    return (batch, Dk, L, K, R, N), tables, params


def _forward(x, proj, wdt, bias, A2, Dv, tables, dims, softplus):
    batch, Dk, L, K, R, N = dims
    src_t, dst_t, order = tables
    y = x.new_empty(batch, L, Dk).transpose(1, 2)
    sx, sp, sy = _strides(x, 3), _strides(proj, 4), _strides(y, 3)

    run_kernel("fused", x.dtype, [x.data_ptr(), ctypes.addressof(sx), proj.data_ptr(), ctypes.addressof(sp),
                                  wdt.data_ptr(), _ptr(bias), softplus, A2.data_ptr(), _ptr(Dv), src_t.data_ptr(),
                                  dst_t.data_ptr(), order.data_ptr(), y.data_ptr(), ctypes.addressof(sy),
                                  K, Dk, L, R, N], batch, _n_parts(batch))
    return y


def _backward(gy, x, proj, wdt, bias, A2, Dv, tables, dims, softplus):
    batch, Dk, L, K, R, N = dims
    src_t, dst_t, _ = tables
    gy = gy.to(x.dtype)
    dx = x.new_empty(batch, L, Dk).transpose(1, 2)  # every element written by the kernel
    dproj = x.new_empty(batch, L, K, R + 2 * N)
    nparts = _n_parts(batch)
    dW = x.new_zeros(nparts, K * Dk, R)  # per-part partial sums, reduced below
    dA = x.new_zeros(nparts, K * Dk, N)
    dD = x.new_zeros(nparts, K * Dk)
    db = x.new_zeros(nparts, K * Dk)
    sx, sp, sg = _strides(x, 3), _strides(proj, 4), _strides(gy, 3)
    sdx, sdp = _strides(dx, 3), _strides(dproj, 4)

    run_kernel("fused_grad", x.dtype, [x.data_ptr(), ctypes.addressof(sx), proj.data_ptr(), ctypes.addressof(sp),
                                       wdt.data_ptr(), _ptr(bias), softplus, A2.data_ptr(), _ptr(Dv),
                                       src_t.data_ptr(), dst_t.data_ptr(), gy.data_ptr(), ctypes.addressof(sg),
                                       dx.data_ptr(), ctypes.addressof(sdx), dproj.data_ptr(), ctypes.addressof(sdp),
                                       dW.data_ptr(), dA.data_ptr(), dD.data_ptr(), db.data_ptr(), K, Dk, L, R, N],
               batch, nparts)
    return dx, dproj, dW.sum(0).view(K, Dk, R), db.sum(0), dA.sum(0), dD.sum(0)


class _MultiScan(torch.autograd.Function):
    """Forward: the fused kernel; backward: its adjoint (``gl_scan_fused_grad``). Saves only the inputs."""

    @staticmethod
    def forward(ctx, x, proj, dt_weight, dt_bias, A, D, src, dst, korder, delta_softplus):
        dims, tables, (p, wdt, bias, A2, Dv) = _prepare(x, proj, dt_weight, dt_bias, A, D, src, dst, korder)
        softplus = int(bool(delta_softplus))
        y = _forward(x, p, wdt, bias, A2, Dv, tables, dims, softplus)
        ctx.save_for_backward(x, p, wdt, bias, A2, Dv)
        ctx.extra = (tables, dims, softplus, dt_bias is not None, D is not None)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        x, p, wdt, bias, A2, Dv = ctx.saved_tensors
        tables, dims, softplus, has_bias, has_D = ctx.extra
        dx, dproj, dW, db, dA, dD = _backward(gy, x, p, wdt, bias, A2, Dv, tables, dims, softplus)
        return dx, dproj, dW, db if has_bias else None, dA, dD if has_D else None, None, None, None, None


def multi_scan(x, proj, dt_weight, dt_bias, A, D, src, dst, korder, delta_softplus=True):
    """K scan directions over one input, summed back in position order; differentiable.

    Arguments and result as :func:`multi_scan_infer`. When a gradient is needed the call goes
    through an autograd Function whose backward is the kernel's adjoint (``gl_scan_fused_grad``:
    the channel-blocked backward of ``scan_kernel_grad.h`` run on each direction's gathered
    block, its results scattered back to x's and proj's positions); otherwise it is
    :func:`multi_scan_infer`. Gradients flow to x, proj, dt_weight, dt_bias, A and D.
    """
    if not fused_scan_available(x.device):
        raise ModelError("multi_scan needs CPU tensors and the native selective-scan kernel")
    tensors = (x, proj, dt_weight, dt_bias, A, D)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return _MultiScan.apply(x, proj, dt_weight, dt_bias, A, D, src, dst, korder, delta_softplus)
    return multi_scan_infer(x, proj, dt_weight, dt_bias, A, D, src, dst, korder, delta_softplus)


def multi_scan_infer(x, proj, dt_weight, dt_bias, A, D, src, dst, korder, delta_softplus=True):
    """K scan directions over one input, summed back in position order (no gradient).

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
    dims, tables, (p, wdt, bias, A2, Dv) = _prepare(x, proj, dt_weight, dt_bias, A, D, src, dst, korder)
    with torch.no_grad():
        return _forward(x.detach(), p.detach(), wdt.detach(), None if bias is None else bias.detach(),
                        A2.detach(), None if Dv is None else Dv.detach(), tables, dims, int(bool(delta_softplus)))
