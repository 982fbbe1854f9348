"""Selective scan (the S6 recurrence of Mamba) with interchangeable backends.

The public function :func:`selective_scan` follows the tensor contract of
``mamba_ssm.ops.selective_scan_interface.selective_scan_fn`` (grouped, input-dependent
``B`` and ``C``)::

    u, delta   : (batch, K*D, L)
    A          : (K*D, N)            (negative for a stable scan; not required)
    B, C       : (batch, K, N, L)    channel d uses group k = d // D;
                 (batch, N, L) is accepted as K = 1
    D          : (K*D,) or None
    delta_bias : (K*D,) or None
    returns    : (batch, K*D, L), float32 (float64 if any input is float64)

For each channel d, state n and step t::

    dt[d,t]  = softplus(delta[d,t] + delta_bias[d])     (softplus only if delta_softplus)
    h[d,t,n] = exp(dt[d,t] * A[d,n]) * h[d,t-1,n] + dt[d,t] * B[k(d),n,t] * u[d,t],  h[-1] = 0
    y[d,t]   = sum_n C[k(d),n,t] * h[d,t,n] + D[d] * u[d,t]

Backends
--------
``reference``
    The recurrence written out: a Python loop over L, vectorised over batch, channels
    and N, differentiated by autograd. Slow and memory hungry; it is the definition.
``cpu``
    Fast forward and backward with hand-written gradients (reverse-time adjoint
    recurrence; nothing of size batch*K*D*L*N is kept between forward and backward).
    Two implementations, same contract:

    * native (used for CPU tensors when possible): a small C kernel compiled on first use
      with the system C compiler (about a second, cached in ``$GEOLESF_KERNEL_CACHE`` or a
      private folder in the temp directory), loaded with ctypes, run over batch ranges on
      ``torch.get_num_threads()`` threads. Softplus, the recurrence, the adjoint and the
      reductions for A, D and delta_bias are fused per (batch, channel) row in L1-sized
      scratch, with a vectorised exp2. ``GEOLESF_SCAN_NATIVE=0`` disables it;
    * torch (fallback without a compiler, and on GPUs): a ``torch.autograd.Function`` that
      processes the batch in chunks (bounded memory), lays each chunk out time-major so
      every recurrence step is one in-place ``addcmul_`` over a contiguous slab, and
      contracts over N/D with batched vector-matrix products.
``mamba_ssm``
    The official CUDA kernel (``mamba_ssm`` package); CUDA tensors only.
``auto``
    ``mamba_ssm`` when it imports and the tensors are on CUDA, otherwise ``cpu``.

``backend="auto"`` can be overridden with the environment variable
``GEOLESF_SCAN_BACKEND`` (one of the names above); an explicit non-auto argument wins
over the variable. An unknown name raises :class:`geolesf.errors.ModelError`.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F

from geolesf.errors import ModelError

__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "mamba_ssm_available",
    "resolve_backend",
    "selective_scan",
    "selective_scan_cpu",
    "selective_scan_reference",
]

BACKENDS = ("auto", "reference", "cpu", "mamba_ssm")
ENV_VAR = "GEOLESF_SCAN_BACKEND"

# Elements (batch_chunk * K*D * L * N) processed per chunk by the cpu backend. About
# 2 M float32 elements = 8 MiB per chunk tensor: the few live tensors of one chunk stay
# in a typical L3 cache and peak extra memory stays in the tens of MiB.
_CHUNK_ELEMS = 1 << 21

_MAMBA_SSM_FN = None
_MAMBA_SSM_TRIED = False


def mamba_ssm_available() -> bool:
    """Whether ``mamba_ssm``'s CUDA selective-scan kernel can be imported."""
    global _MAMBA_SSM_FN, _MAMBA_SSM_TRIED
    if not _MAMBA_SSM_TRIED:
        _MAMBA_SSM_TRIED = True
        try:  # pragma: no cover - depends on a CUDA-only package
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

            _MAMBA_SSM_FN = selective_scan_fn
        except Exception:  # ImportError, missing CUDA libraries, ABI mismatch ...
            _MAMBA_SSM_FN = None
    return _MAMBA_SSM_FN is not None


def resolve_backend(backend: str = "auto", device: torch.device | str | None = None) -> str:
    """The concrete backend (``reference``, ``cpu`` or ``mamba_ssm``) a call would use."""
    if backend is None:
        backend = "auto"
    name = str(backend).strip().lower()
    source = "backend argument"
    if name == "auto":
        env = os.environ.get(ENV_VAR, "").strip().lower()
        if env:
            name, source = env, f"environment variable {ENV_VAR}"
    if name not in BACKENDS:
        raise ModelError(
            f"unknown selective-scan backend '{backend if source == 'backend argument' else name}' "
            f"(from the {source}); expected one of {', '.join(BACKENDS)}"
        )
    is_cuda = device is not None and torch.device(device).type == "cuda"
    if name == "auto":
        return "mamba_ssm" if is_cuda and mamba_ssm_available() else "cpu"
    if name == "mamba_ssm":
        if not mamba_ssm_available():
            raise ModelError(
                f"selective-scan backend 'mamba_ssm' requested (from the {source}) but the "
                "mamba_ssm package does not import; install it (pip install 'geolesf[cuda]') "
                "or use backend 'cpu'"
            )
        if not is_cuda:
            raise ModelError(
                f"selective-scan backend 'mamba_ssm' requested (from the {source}) but the "
                "tensors are not on a CUDA device; use backend 'cpu' or 'auto'"
            )
    return name


# ---------------------------------------------------------------------------------------
# input checking
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# reference backend
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# cpu backend (pure PyTorch, hand-written backward)
# ---------------------------------------------------------------------------------------


_LOG2E = 1.4426950408889634


def _time_major(x, K):
    """(b, K*Dk, L) -> contiguous (L, b, K, Dk)."""
    b, channels, L = x.shape
    return x.permute(2, 0, 1).reshape(L, b, K, channels // K).contiguous()


class _Workspace:
    """Reusable flat buffers, so the chunk loop does not allocate (and page-fault) per chunk."""

    def __init__(self, like, numel, count):
        self.bufs = [like.new_empty(numel) for _ in range(count)]

    def get(self, i, shape):
        n = 1
        for s in shape:
            n *= s
        return self.bufs[i][:n].view(shape)


def _chunk_states(uT, dtT, A2, Bt, dA, H):
    """Decay factors and states of one chunk, time-major.

    uT, dtT: (L, b, K, Dk); A2 = A * log2(e): (K, Dk, N); Bt: (L, b, K, N).
    Fills dA[t] = exp(dt[t] A) and H[t] = dA[t] H[t-1] + dt[t] u[t] B[t] (both
    (L, b, K, Dk, N)); H is first the input term, then overwritten in place by the states,
    one fused ``addcmul_`` per step over a contiguous slab.
    """
    torch.mul(dtT.unsqueeze(-1), A2, out=dA).exp2_()
    torch.mul((dtT * uT).unsqueeze(-1), Bt.unsqueeze(3), out=H)
    for t in range(1, H.shape[0]):
        H[t].addcmul_(dA[t], H[t - 1])


def _vec_mat_t(vec, mat):
    """out[m, i] = sum_j vec[m, j] * mat[m, i, j]  (contraction over the last axis of mat).

    Written as (M, 1, J) @ (M, I, J)^T: the batched vector-matrix form that BLAS runs fast;
    the mathematically equal (M, I, J) @ (M, J, 1) is several times slower on CPU.
    """
    return torch.bmm(vec.unsqueeze(1), mat.transpose(1, 2)).squeeze(1)


def _vec_mat(vec, mat):
    """out[m, j] = sum_i vec[m, i] * mat[m, i, j]."""
    return torch.bmm(vec.unsqueeze(1), mat).squeeze(1)


def _chunk_size(batch, channels, L, N, chunk_elems):
    return max(1, min(batch, int(chunk_elems // max(1, channels * L * N))))


def _biased_delta(delta, delta_bias, softplus):
    z = delta if delta_bias is None else delta + delta_bias[:, None]
    return z, (F.softplus(z) if softplus else z)


class _CpuSelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus, chunk_elems):
        batch, channels, L = u.shape
        K, N = B.shape[1], A.shape[1]
        Dk = channels // K
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias)
        ctx.delta_softplus = delta_softplus
        ctx.chunk_elems = chunk_elems
        A2 = (A * _LOG2E).view(K, Dk, N)
        out = u.new_empty(batch, channels, L)
        step = _chunk_size(batch, channels, L, N, chunk_elems)
        ws = _Workspace(u, step * channels * L * N, 2)
        for s in range(0, batch, step):
            e = min(batch, s + step)
            b = e - s
            shape = (L, b, K, Dk, N)
            _, dt = _biased_delta(delta[s:e], delta_bias, delta_softplus)
            uT, dtT = _time_major(u[s:e], K), _time_major(dt, K)
            Bt = B[s:e].permute(3, 0, 1, 2)
            Ct = C[s:e].permute(3, 0, 1, 2).reshape(L * b * K, N)
            dA, H = ws.get(0, shape), ws.get(1, shape)
            _chunk_states(uT, dtT, A2, Bt, dA, H)
            y = _vec_mat_t(Ct, H.view(L * b * K, Dk, N))  # (M, Dk): sum_n C h
            out[s:e] = y.view(L, b, channels).permute(1, 2, 0)
        if D is not None:
            out.addcmul_(u, D[:, None])
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        u, delta, A, B, C, D, delta_bias = ctx.saved_tensors
        batch, channels, L = u.shape
        K, N = B.shape[1], A.shape[1]
        Dk = channels // K
        gy = gy.to(u.dtype)
        A2 = (A * _LOG2E).view(K, Dk, N)
        du = torch.empty_like(u)
        ddelta = torch.empty_like(u)
        dA_acc = torch.zeros_like(A)
        dB = torch.empty_like(B)
        dC = torch.empty_like(C)
        step = _chunk_size(batch, channels, L, N, ctx.chunk_elems)
        ws = _Workspace(u, step * channels * L * N, 3)
        for s in range(0, batch, step):
            e = min(batch, s + step)
            b = e - s
            M, Lb = L * b * K, L * b
            shape = (L, b, K, Dk, N)
            _, dt = _biased_delta(delta[s:e], delta_bias, ctx.delta_softplus)
            uT, dtT, gT = _time_major(u[s:e], K), _time_major(dt, K), _time_major(gy[s:e], K)
            Bt = B[s:e].permute(3, 0, 1, 2).contiguous()  # (L, b, K, N)
            Ct = C[s:e].permute(3, 0, 1, 2).contiguous()
            dA, H, lam = ws.get(0, shape), ws.get(1, shape), ws.get(2, shape)
            _chunk_states(uT, dtT, A2, Bt, dA, H)  # recompute the forward of this chunk
            # dC[t,b,k,n] = sum_d g h
            dC[s:e] = _vec_mat(gT.view(M, Dk), H.view(M, Dk, N)).view(L, b, K, N).permute(1, 2, 3, 0)
            # adjoint, reverse time: lam[t] = C[t] g[t] + dA[t+1] lam[t+1]
            torch.mul(gT.unsqueeze(-1), Ct.unsqueeze(3), out=lam)
            for t in range(L - 2, -1, -1):
                lam[t].addcmul_(dA[t + 1], lam[t + 1])
            # input term x = dt u B:  dB = sum_d dt u lam,  lamB = sum_n lam B
            dtu = dtT * uT
            dB[s:e] = _vec_mat(dtu.view(M, Dk), lam.view(M, Dk, N)).view(L, b, K, N).permute(1, 2, 3, 0)
            lamB = _vec_mat_t(Bt.view(M, N), lam.view(M, Dk, N)).view(L, b, K, Dk)
            # decay term: q[t] = lam[t] dA[t] h[t-1] (q[0] = 0), computed in the lam buffer
            q = lam
            q[1:].mul_(dA[1:]).mul_(H[:-1])
            q[0].zero_()
            qf = q.view(Lb, channels, N)
            # ddt += sum_n q A ;  dA += sum_{t,b} q dt
            ddt = torch.bmm(A.unsqueeze(1), qf.permute(1, 2, 0)).view(channels, Lb).t().reshape(L, b, K, Dk)
            dA_acc += qf.mul_(dtT.view(Lb, channels, 1)).sum(0)
            ddt.addcmul_(lamB, uT)
            duT = lamB.mul_(dtT)
            if D is not None:
                duT.addcmul_(gT, D.view(K, Dk))
            du[s:e] = duT.view(L, b, channels).permute(1, 2, 0)
            ddelta[s:e] = ddt.view(L, b, channels).permute(1, 2, 0)
        if ctx.delta_softplus:
            z = delta if delta_bias is None else delta + delta_bias[:, None]
            ddelta.mul_(torch.sigmoid(z))
        dD = (gy * u).sum((0, 2)) if D is not None else None
        ddb = ddelta.sum((0, 2)) if delta_bias is not None else None
        return du, ddelta, dA_acc, dB, dC, dD, ddb, None, None


# ---------------------------------------------------------------------------------------
# cpu backend, native kernel (plain C, compiled once with the system C compiler)
# ---------------------------------------------------------------------------------------

_C_PRELUDE = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

/* 2^x in float, vectorisable (no libm call): x = i + f with i = round(x), |f| <= 1/2,
   2^f by the degree-6 minimax polynomial of Cephes' exp2f (relative error ~1.5e-7),
   2^i from the exponent bits. Exactly 0 below 2^-126 (no denormals), +inf from 2^128. */
static inline float gl_exp2f(float x) {
    const float big = 12582912.0f; /* 1.5 * 2^23: (x + big) - big rounds x to an integer */
    float xc = x < -126.0f ? -126.0f : (x > 127.0f ? 127.0f : x);
    float r = (xc + big) - big;
    float f = xc - r;
    float p = 1.535336188319500e-4f;
    p = p * f + 1.339887440266574e-3f;
    p = p * f + 9.618437357674640e-3f;
    p = p * f + 5.550332471162809e-2f;
    p = p * f + 2.402264791363012e-1f;
    p = p * f + 6.931472028550421e-1f;
    p = p * f + 1.0f;
    int32_t e = ((int32_t)r + 127) << 23;
    float s;
    memcpy(&s, &e, sizeof s);
    float v = p * s;
    v = x < -126.0f ? 0.0f : v;
    v = x >= 128.0f ? INFINITY : v;
    return v;
}

static inline double gl_exp2d(double x) { return exp2(x); }

/* log(1 + e) for e in [0, 1], vectorisable: Cephes logf polynomial on the mantissa of
   y = 1 + e plus a first-order correction for the rounding of 1 + e. */
static inline float gl_log1p01f(float e) {
    float y = 1.0f + e;
    float c = (e - (y - 1.0f)) / y;
    int hi = y > 1.41421356f;
    float m = hi ? 0.5f * y : y;
    float k = hi ? 0.693147180559945f : 0.0f;
    float x = m - 1.0f;
    float z = x * x;
    float p = 7.0376836292e-2f;
    p = p * x - 1.1514610310e-1f;
    p = p * x + 1.1676998740e-1f;
    p = p * x - 1.2420140846e-1f;
    p = p * x + 1.4249322787e-1f;
    p = p * x - 1.6668057665e-1f;
    p = p * x + 2.0000714765e-1f;
    p = p * x - 2.4999993993e-1f;
    p = p * x + 3.3333331174e-1f;
    return (x * z * p - 0.5f * z + x) + k + c;
}

/* softplus with PyTorch's threshold (z > 20 -> z) and its derivative sigmoid(z). */
static inline float gl_softplusf(float z) {
    float v = (z > 0.0f ? z : 0.0f) + gl_log1p01f(gl_exp2f(-fabsf(z) * 1.4426950408889634f));
    return z > 20.0f ? z : v;
}
static inline float gl_sigmoidf(float z) { return 1.0f / (1.0f + gl_exp2f(-z * 1.4426950408889634f)); }
static inline double gl_softplusd(double z) { return z > 20.0 ? z : log1p(exp(z)); }
static inline double gl_sigmoidd(double z) { return 1.0 / (1.0 + exp(-z)); }
"""

# One copy per precision: @REAL@ / @SUF@ / @EXP2@ are substituted below. Layouts: u, dt,
# y, gy, du, ddt (batch, K*D, L); Bt, Ct, dB, dC (batch, K, L, N) (time-major per group,
# so the state axis N is contiguous and the inner loops vectorise); A2 = A*log2(e) (K*D, N).
_C_BODY = r"""
/* dt[t] = softplus(delta[t] + bias) (or without softplus) for one row, and optionally
   sig[t] = d dt / d delta. */
static inline __attribute__((always_inline)) void row_dt_@SUF@(
    const @REAL@* delta, @REAL@ bias, int sp, int64_t L, @REAL@* dt, @REAL@* sig)
{
    if (sp) {
#pragma omp simd
        for (int64_t t = 0; t < L; ++t) dt[t] = gl_softplus@S@(delta[t] + bias);
        if (sig) {
#pragma omp simd
            for (int64_t t = 0; t < L; ++t) sig[t] = gl_sigmoid@S@(delta[t] + bias);
        }
    } else {
        for (int64_t t = 0; t < L; ++t) dt[t] = delta[t] + bias;
        if (sig) for (int64_t t = 0; t < L; ++t) sig[t] = 1;
    }
}

static inline __attribute__((always_inline)) int fwd_rows_@SUF@(
    const @REAL@* u, const @REAL@* delta, const @REAL@* bias, int sp, const @REAL@* A2,
    const @REAL@* Bt, const @REAL@* Ct, const @REAL@* D, @REAL@* y,
    int64_t b0, int64_t b1, int64_t KD, int64_t K, int64_t L, const int64_t N)
{
    const int64_t Dk = KD / K;
    @REAL@ h[N];
    @REAL@* dt = (@REAL@*)malloc(sizeof(@REAL@) * (size_t)L);
    if (!dt) return 1;
    for (int64_t b = b0; b < b1; ++b) {
        for (int64_t d = 0; d < KD; ++d) {
            const int64_t row = (b * KD + d) * L;
            const @REAL@* Bb = Bt + (b * K + d / Dk) * L * N;
            const @REAL@* Cb = Ct + (b * K + d / Dk) * L * N;
            const @REAL@* Ad = A2 + d * N;
            const @REAL@ Dd = D ? D[d] : (@REAL@)0;
            row_dt_@SUF@(delta + row, bias ? bias[d] : (@REAL@)0, sp, L, dt, 0);
            for (int64_t n = 0; n < N; ++n) h[n] = 0;
            for (int64_t t = 0; t < L; ++t) {
                const @REAL@ dtt = dt[t], ut = u[row + t], xt = dtt * ut;
                const @REAL@* Bn = Bb + t * N;
                const @REAL@* Cn = Cb + t * N;
                @REAL@ acc = 0;
#pragma omp simd reduction(+:acc)
                for (int64_t n = 0; n < N; ++n) {
                    h[n] = gl_exp2@S@(dtt * Ad[n]) * h[n] + xt * Bn[n];
                    acc += Cn[n] * h[n];
                }
                y[row + t] = acc + Dd * ut;
            }
        }
    }
    free(dt);
    return 0;
}

int gl_scan_fwd_@SUF@(
    const @REAL@* u, const @REAL@* delta, const @REAL@* bias, int64_t sp, const @REAL@* A2,
    const @REAL@* Bt, const @REAL@* Ct, const @REAL@* D, @REAL@* y,
    int64_t b0, int64_t b1, int64_t KD, int64_t K, int64_t L, int64_t N)
{
    if (N == 16) return fwd_rows_@SUF@(u, delta, bias, (int)sp, A2, Bt, Ct, D, y, b0, b1, KD, K, L, 16);
    return fwd_rows_@SUF@(u, delta, bias, (int)sp, A2, Bt, Ct, D, y, b0, b1, KD, K, L, N);
}

/* Backward for batch rows [b0, b1): per (b, d) row, recompute dt, the decays a[t] and the
   states h[t] into scratch, then run the adjoint lam backwards in time. Writes du and
   ddelta; accumulates dA (natural units of A), dD, dbias (per part) and dB, dC (rows of
   this part only, so parts never write the same memory). */
static inline __attribute__((always_inline)) int bwd_rows_@SUF@(
    const @REAL@* u, const @REAL@* delta, const @REAL@* bias, int sp, const @REAL@* A2,
    const @REAL@* Bt, const @REAL@* Ct, const @REAL@* D, const @REAL@* gy,
    @REAL@* du, @REAL@* ddelta, @REAL@* dAacc, @REAL@* dDacc, @REAL@* dbacc,
    @REAL@* dB, @REAL@* dC, int64_t b0, int64_t b1, int64_t KD, int64_t K, int64_t L,
    const int64_t N)
{
    const int64_t Dk = KD / K;
    const @REAL@ ln2 = (@REAL@)0.69314718055994530942;
    @REAL@* a = (@REAL@*)malloc(sizeof(@REAL@) * (size_t)(2 * L * N + N + 2 * L));
    if (!a) return 1;
    @REAL@* h = a + L * N;
    @REAL@* lam = h + L * N;
    @REAL@* dt = lam + N;
    @REAL@* sig = dt + L;
    for (int64_t b = b0; b < b1; ++b) {
        for (int64_t d = 0; d < KD; ++d) {
            const int64_t row = (b * KD + d) * L;
            const int64_t grp = (b * K + d / Dk) * L * N;
            const @REAL@* Bb = Bt + grp;
            const @REAL@* Cb = Ct + grp;
            @REAL@* dBb = dB + grp;
            @REAL@* dCb = dC + grp;
            const @REAL@* Ad = A2 + d * N;
            @REAL@* dAd = dAacc + d * N;
            const @REAL@ Dd = D ? D[d] : (@REAL@)0;
            row_dt_@SUF@(delta + row, bias ? bias[d] : (@REAL@)0, sp, L, dt, sig);
            for (int64_t t = 0; t < L; ++t) {
                const @REAL@ dtt = dt[t], xt = dtt * u[row + t];
                const @REAL@* Bn = Bb + t * N;
                @REAL@* at = a + t * N;
                @REAL@* ht = h + t * N;
                if (t) {
                    /* h[t-1] is only read for t > 0: at t = 0 the scratch holds whatever malloc
                       returned, and 0 * (NaN or Inf left there) would poison the gradients. */
                    const @REAL@* hp = h + (t - 1) * N;
#pragma omp simd
                    for (int64_t n = 0; n < N; ++n) {
                        at[n] = gl_exp2@S@(dtt * Ad[n]);
                        ht[n] = at[n] * hp[n] + xt * Bn[n];
                    }
                } else {
#pragma omp simd
                    for (int64_t n = 0; n < N; ++n) {
                        at[n] = gl_exp2@S@(dtt * Ad[n]);
                        ht[n] = xt * Bn[n];
                    }
                }
            }
            for (int64_t n = 0; n < N; ++n) lam[n] = 0;
            @REAL@ sum_dd = 0, sum_gu = 0;
            for (int64_t t = L - 1; t >= 0; --t) {
                const @REAL@ g = gy[row + t], dtt = dt[t], ut = u[row + t];
                const @REAL@ dtu = dtt * ut;
                const @REAL@* Bn = Bb + t * N;
                const @REAL@* Cn = Cb + t * N;
                @REAL@* dBn = dBb + t * N;
                @REAL@* dCn = dCb + t * N;
                const @REAL@* at = a + t * N;
                const @REAL@* ht = h + t * N;
                @REAL@ lamB = 0, qA = 0;
                if (t > 0) {
                    const @REAL@* hp = h + (t - 1) * N;
#pragma omp simd reduction(+:lamB, qA)
                    for (int64_t n = 0; n < N; ++n) {
                        const @REAL@ l = lam[n] + g * Cn[n];
                        dCn[n] += g * ht[n];
                        dBn[n] += dtu * l;
                        lamB += l * Bn[n];
                        const @REAL@ q = l * at[n] * hp[n];
                        qA += q * Ad[n];
                        dAd[n] += q * dtt;
                        lam[n] = at[n] * l;
                    }
                } else {
#pragma omp simd reduction(+:lamB)
                    for (int64_t n = 0; n < N; ++n) {
                        const @REAL@ l = lam[n] + g * Cn[n];
                        dCn[n] += g * ht[n];
                        dBn[n] += dtu * l;
                        lamB += l * Bn[n];
                    }
                }
                du[row + t] = lamB * dtt + Dd * g;
                const @REAL@ dd = (lamB * ut + qA * ln2) * sig[t];
                ddelta[row + t] = dd;
                sum_dd += dd;
                sum_gu += g * ut;
            }
            dDacc[d] += sum_gu;
            dbacc[d] += sum_dd;
        }
    }
    free(a);
    return 0;
}

int gl_scan_bwd_@SUF@(
    const @REAL@* u, const @REAL@* delta, const @REAL@* bias, int64_t sp, const @REAL@* A2,
    const @REAL@* Bt, const @REAL@* Ct, const @REAL@* D, const @REAL@* gy,
    @REAL@* du, @REAL@* ddelta, @REAL@* dAacc, @REAL@* dDacc, @REAL@* dbacc,
    @REAL@* dB, @REAL@* dC, int64_t b0, int64_t b1, int64_t KD, int64_t K, int64_t L, int64_t N)
{
    if (N == 16)
        return bwd_rows_@SUF@(u, delta, bias, (int)sp, A2, Bt, Ct, D, gy, du, ddelta, dAacc, dDacc, dbacc,
                              dB, dC, b0, b1, KD, K, L, 16);
    return bwd_rows_@SUF@(u, delta, bias, (int)sp, A2, Bt, Ct, D, gy, du, ddelta, dAacc, dDacc, dbacc,
                          dB, dC, b0, b1, KD, K, L, N);
}
"""

NATIVE_ENV_VAR = "GEOLESF_SCAN_NATIVE"
KERNEL_CACHE_ENV_VAR = "GEOLESF_KERNEL_CACHE"

_NATIVE = {"tried": False, "lib": None, "error": None}
_NATIVE_LOCK = threading.Lock()
_POOL = {"pool": None, "size": 0}


def _c_source() -> str:
    body = ""
    for real, suf, short in (("float", "f32", "f"), ("double", "f64", "d")):
        body += _C_BODY.replace("@REAL@", real).replace("@SUF@", suf).replace("@S@", short)
    return _C_PRELUDE + body


def _kernel_cache_dir() -> Path:
    value = os.environ.get(KERNEL_CACHE_ENV_VAR)
    if value:
        path = Path(value).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path
    uid = os.getuid() if hasattr(os, "getuid") else 0
    path = Path(tempfile.gettempdir()) / f"geolesf-kernels-{uid}"
    path.mkdir(mode=0o700, exist_ok=True)
    st = path.stat()
    # a shared temp folder: only trust a cache folder that is ours and private
    if hasattr(os, "getuid") and (st.st_uid != uid or st.st_mode & 0o022):
        path = Path(tempfile.mkdtemp(prefix="geolesf-kernels-"))
    return path


def _cpu_id() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))][:2]
        return "\n".join(lines)
    except OSError:
        return platform.processor()


def _compile_native():
    """Build (or load from the cache) the C kernel; returns a ctypes library or raises."""
    if sys.platform.startswith("win"):
        raise RuntimeError("the native selective-scan kernel is not built on Windows")
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not compiler:
        raise RuntimeError("no C compiler found (set CC)")
    source = _c_source()
    # No -ffast-math (it would break the rounding trick in gl_exp2f); -fno-trapping-math
    # lets the clamps vectorise, -ffp-contract=fast allows FMAs under -std=c99.
    common = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=fast", "-fPIC", "-shared", "-std=c99"]
    flag_sets = [
        [*common, "-march=native", "-fopenmp-simd"],
        [*common, "-fopenmp-simd"],
        ["-O2", "-fPIC", "-shared", "-std=c99"],
    ]
    cache = _kernel_cache_dir()
    errors = []
    for flags in flag_sets:
        key = hashlib.sha256("\0".join([source, compiler, *flags, platform.machine(), _cpu_id()]).encode()).hexdigest()[:24]
        lib_path = cache / f"selective_scan_{key}.so"
        if not lib_path.is_file():
            with tempfile.TemporaryDirectory(dir=cache) as tmp:
                src = Path(tmp) / "selective_scan.c"
                src.write_text(source)
                out = Path(tmp) / lib_path.name
                proc = subprocess.run(
                    [compiler, *flags, str(src), "-o", str(out), "-lm"],
                    capture_output=True, text=True, timeout=120,
                )
                if proc.returncode != 0 or not out.is_file():
                    errors.append(f"{' '.join(flags)}: {proc.stderr.strip()[-500:]}")
                    continue
                os.replace(out, lib_path)
        try:
            lib = ctypes.CDLL(str(lib_path))
        except OSError as exc:
            errors.append(f"{lib_path}: {exc}")
            continue
        ptr, i64 = ctypes.c_void_p, ctypes.c_int64
        for suf in ("f32", "f64"):
            fwd = getattr(lib, f"gl_scan_fwd_{suf}")
            fwd.argtypes = [ptr, ptr, ptr, i64] + [ptr] * 5 + [i64] * 6
            fwd.restype = ctypes.c_int
            bwd = getattr(lib, f"gl_scan_bwd_{suf}")
            bwd.argtypes = [ptr, ptr, ptr, i64] + [ptr] * 12 + [i64] * 6
            bwd.restype = ctypes.c_int
        return lib
    raise RuntimeError("compiling the native selective-scan kernel failed: " + " | ".join(errors))


def native_kernel_available() -> bool:
    """Whether the compiled C kernel of the ``cpu`` backend can be used in this process.

    Compiled on first use with the system C compiler (about a second), cached in
    ``$GEOLESF_KERNEL_CACHE`` or a private folder under the system temp directory.
    ``GEOLESF_SCAN_NATIVE=0`` disables it; without a compiler the pure-PyTorch
    implementation is used.
    """
    if os.environ.get(NATIVE_ENV_VAR, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    with _NATIVE_LOCK:
        if not _NATIVE["tried"]:
            _NATIVE["tried"] = True
            try:
                _NATIVE["lib"] = _compile_native()
            except Exception as exc:  # no compiler, sandbox, odd platform: fall back
                _NATIVE["error"] = str(exc)
                warnings.warn(
                    f"geolesf: native selective-scan kernel unavailable ({exc}); "
                    "using the pure-PyTorch cpu scan", RuntimeWarning, stacklevel=3,
                )
    return _NATIVE["lib"] is not None


def _run_parallel(fn, batch, nparts):
    """Run fn(part, b0, b1) over contiguous batch ranges on a thread pool (ctypes drops the GIL)."""
    bounds = [batch * i // nparts for i in range(nparts + 1)]
    ranges = [(i, bounds[i], bounds[i + 1]) for i in range(nparts) if bounds[i + 1] > bounds[i]]
    threads = max(1, torch.get_num_threads())
    if threads == 1 or len(ranges) == 1:
        return [fn(*r) for r in ranges]
    with _NATIVE_LOCK:
        if _POOL["pool"] is None or _POOL["size"] != threads:
            if _POOL["pool"] is not None:
                _POOL["pool"].shutdown(wait=False)
            _POOL["pool"] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="geolesf-scan")
            _POOL["size"] = threads
        pool = _POOL["pool"]
    return list(pool.map(lambda r: fn(*r), ranges))


def _n_parts(batch):
    # a few parts per thread: even load when another process steals a core
    return max(1, min(batch, 4 * max(1, torch.get_num_threads())))


def _ptr(t):
    return None if t is None else t.data_ptr()


class _NativeSelectiveScan(torch.autograd.Function):
    """Forward/backward entirely in the C kernel: softplus, recurrence, adjoint and the
    reductions for dA, dD and delta_bias, one (batch, channel) row at a time in L1-sized
    scratch, batch ranges spread over a thread pool. Nothing but the inputs is saved."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus):
        lib = _NATIVE["lib"]
        batch, channels, L = u.shape
        K, N = B.shape[1], A.shape[1]
        A2 = (A * _LOG2E).contiguous()
        Bt = B.transpose(2, 3).contiguous()  # (batch, K, L, N): state axis contiguous
        Ct = C.transpose(2, 3).contiguous()
        y = torch.empty_like(u)
        fwd = lib.gl_scan_fwd_f32 if u.dtype == torch.float32 else lib.gl_scan_fwd_f64
        sp = int(bool(delta_softplus))

        def work(_, b0, b1):
            return fwd(u.data_ptr(), delta.data_ptr(), _ptr(delta_bias), sp, A2.data_ptr(), Bt.data_ptr(),
                       Ct.data_ptr(), _ptr(D), y.data_ptr(), b0, b1, channels, K, L, N)

        if any(_run_parallel(work, batch, _n_parts(batch))):
            raise MemoryError("native selective scan: out of memory")
        ctx.save_for_backward(u, delta, delta_bias, A2, Bt, Ct, D)
        ctx.delta_softplus = sp
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        lib = _NATIVE["lib"]
        u, delta, delta_bias, A2, Bt, Ct, D = ctx.saved_tensors
        batch, channels, L = u.shape
        K, N = Bt.shape[1], A2.shape[1]
        gy = gy.to(u.dtype).contiguous()
        du = torch.empty_like(u)
        ddelta = torch.empty_like(u)
        dBt = torch.zeros_like(Bt)
        dCt = torch.zeros_like(Ct)
        nparts = _n_parts(batch)
        bwd = lib.gl_scan_bwd_f32 if u.dtype == torch.float32 else lib.gl_scan_bwd_f64
        dA_parts = u.new_zeros(nparts, channels, N)  # per-part partial sums, reduced below
        dD_parts = u.new_zeros(nparts, channels)
        db_parts = u.new_zeros(nparts, channels)

        def work(i, b0, b1):
            return bwd(u.data_ptr(), delta.data_ptr(), _ptr(delta_bias), ctx.delta_softplus, A2.data_ptr(),
                       Bt.data_ptr(), Ct.data_ptr(), _ptr(D), gy.data_ptr(), du.data_ptr(), ddelta.data_ptr(),
                       dA_parts[i].data_ptr(), dD_parts[i].data_ptr(), db_parts[i].data_ptr(),
                       dBt.data_ptr(), dCt.data_ptr(), b0, b1, channels, K, L, N)

        if any(_run_parallel(work, batch, nparts)):
            raise MemoryError("native selective scan: out of memory")
        dD = dD_parts.sum(0) if D is not None else None
        dbias = db_parts.sum(0) if delta_bias is not None else None
        return du, ddelta, dA_parts.sum(0), dBt.transpose(2, 3), dCt.transpose(2, 3), dD, dbias, None


def selective_scan_cpu(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False, *,
                       impl="auto", chunk_elems=None):
    """The ``cpu`` backend: the native C kernel when available, else pure PyTorch.

    ``impl``: ``"auto"`` (native kernel for CPU tensors when it compiles), ``"native"``
    (require it; ModelError if unavailable) or ``"torch"`` (the chunked pure-PyTorch
    implementation, which also runs on GPUs). ``chunk_elems`` tunes the torch path.
    """
    B, C = _check(u, delta, A, B, C, D, delta_bias)
    dtype = _compute_dtype(u, delta, A, B, C, D, delta_bias)

    def prep(t):
        return None if t is None else t.to(dtype).contiguous()

    if impl not in ("auto", "native", "torch"):
        raise ModelError(f"selective_scan_cpu: impl must be auto, native or torch, got '{impl}'")
    use_native = impl != "torch" and u.device.type == "cpu" and native_kernel_available()
    if impl == "native" and not use_native:
        raise ModelError(
            "the native selective-scan kernel is unavailable "
            f"({_NATIVE['error'] or 'disabled, on a non-CPU device or GEOLESF_SCAN_NATIVE=0'})"
        )
    args = (prep(u), prep(delta), prep(A), prep(B), prep(C), prep(D), prep(delta_bias), bool(delta_softplus))
    if use_native:
        return _NativeSelectiveScan.apply(*args)
    return _CpuSelectiveScan.apply(*args, int(chunk_elems or _CHUNK_ELEMS))


# ---------------------------------------------------------------------------------------
# dispatcher
# ---------------------------------------------------------------------------------------


def _selective_scan_mamba_ssm(u, delta, A, B, C, D, delta_bias, delta_softplus):  # pragma: no cover
    mamba_ssm_available()
    _check(u, delta, A, B, C, D, delta_bias)
    y = _MAMBA_SSM_FN(
        u.contiguous(), delta.contiguous(), A.contiguous(), B.contiguous(), C.contiguous(),
        None if D is None else D.float().contiguous(), z=None,
        delta_bias=None if delta_bias is None else delta_bias.float().contiguous(),
        delta_softplus=delta_softplus, return_last_state=False,
    )
    return y.float() if y.dtype not in (torch.float32, torch.float64) else y


def selective_scan(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False, backend="auto"):
    """Selective scan with the ``mamba_ssm.selective_scan_fn`` contract (see module docstring).

    ``backend`` is ``"auto"`` (default), ``"cpu"``, ``"reference"`` or ``"mamba_ssm"``;
    with ``"auto"`` the environment variable ``GEOLESF_SCAN_BACKEND`` may name another.
    """
    name = resolve_backend(backend, u.device)
    if name == "cpu":
        return selective_scan_cpu(u, delta, A, B, C, D, delta_bias, delta_softplus)
    if name == "reference":
        return selective_scan_reference(u, delta, A, B, C, D, delta_bias, delta_softplus)
    return _selective_scan_mamba_ssm(u, delta, A, B, C, D, delta_bias, delta_softplus)
