"""The pure-PyTorch implementation of the ``cpu`` backend (fallback without a C compiler, and on GPUs).

A ``torch.autograd.Function`` with a hand-written backward (reverse-time adjoint recurrence)
that processes the batch in chunks (bounded memory), lays each chunk out time-major so every
recurrence step is one in-place ``addcmul_`` over a contiguous slab, and contracts over N/D
with batched vector-matrix products.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from geolesf.ops.selective_scan.contract import _LOG2E

# Elements (batch_chunk * K*D * L * N) processed per chunk by the cpu backend. About
# 2 M float32 elements = 8 MiB per chunk tensor: the few live tensors of one chunk stay
# in a typical L3 cache and peak extra memory stays in the tens of MiB.
_CHUNK_ELEMS = 1 << 21


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
