"""The multi-direction inference scan (``multi_scan_infer``, ``scan_kernel_fused.h``) against the
``reference`` backend run direction by direction on explicitly gathered copies."""

from __future__ import annotations

import pytest
import torch

from geolesf.errors import ModelError
from geolesf.ops.selective_scan import native_kernel_available, selective_scan_reference
from geolesf.ops.selective_scan.fused import multi_scan, multi_scan_infer

needs_native = pytest.mark.skipif(not native_kernel_available(), reason="no C compiler for the native kernel")


def composed(x, proj, wdt, bias, A, D, src, dst, korder):
    """What multi_scan_infer computes, written with gathers and the reference backend (float64)."""
    x, proj, wdt, bias, A, D = (t.double() for t in (x, proj, wdt, bias, A, D))
    K, Dk, R = wdt.shape
    N = A.shape[1]
    y = None
    for k in korder:
        xs = x[:, :, src[k]]
        p = proj[:, src[k], k]
        delta = torch.einsum("blr,dr->bdl", p[..., :R], wdt[k])
        ch = slice(k * Dk, (k + 1) * Dk)
        yk = selective_scan_reference(xs, delta, A[ch], p[..., R:R + N].mT, p[..., R + N:].mT, D[ch], bias[ch],
                                      delta_softplus=True)
        out = torch.zeros_like(yk)
        out[:, :, dst[k]] = yk
        y = out if y is None else y + out
    return y


def cross_tables(h, w):
    """S²Mamba's PCS cross-scan as index tables: row-major, column-major, both reversed."""
    L = h * w
    rows = list(range(L))
    cols = [(t % h) * w + t // h for t in range(L)]
    tables = [rows, cols, rows[::-1], cols[::-1]]
    return tables, tables


def make(batch, Dk, L, K, R, N, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    # x and proj as strided views (channels-last x; a projection with its K blocks interleaved)
    x = torch.randn(batch, L, Dk, generator=g, dtype=torch.float64).to(dtype).transpose(1, 2)
    proj = torch.randn(batch, L, K * (R + 2 * N) + 3, generator=g, dtype=torch.float64).to(dtype)
    proj = proj[..., 3:].reshape(batch, L, K, R + 2 * N)
    wdt = (torch.randn(K, Dk, R, generator=g, dtype=torch.float64) * 0.5).to(dtype)
    bias = (torch.randn(K * Dk, generator=g, dtype=torch.float64) * 0.3 - 1).to(dtype)
    A = -(torch.rand(K * Dk, N, generator=g, dtype=torch.float64) * 2 + 0.1).to(dtype)
    D = torch.randn(K * Dk, generator=g, dtype=torch.float64).to(dtype)
    return x, proj, wdt, bias, A, D


def tol(dtype):
    return 1e-5 if dtype == torch.float32 else 1e-11


# (batch, Dk, h, w, R, N): the S²Mamba PCS shape, odd channel counts (partial lane blocks),
# batch 1, a state size other than the specialised 16
PCS_SHAPES = [(2, 128, 7, 7, 4, 16), (1, 13, 3, 5, 2, 16), (3, 21, 4, 3, 1, 5)]


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", PCS_SHAPES)
def test_cross_scan_matches_reference(shape, dtype):
    batch, Dk, h, w, R, N = shape
    x, proj, wdt, bias, A, D = make(batch, Dk, h * w, 4, R, N, dtype)
    src, dst = cross_tables(h, w)
    order = (0, 2, 1, 3)
    want = composed(x, proj, wdt, bias, A, D, src, dst, order)
    with torch.inference_mode():
        got = multi_scan_infer(x, proj, wdt, bias, A, D, src, dst, order)
    assert got.dtype == dtype and got.shape == want.shape
    assert got.transpose(1, 2).is_contiguous()
    err = (got.double() - want).abs().max().item()
    assert err <= tol(dtype) * max(1.0, want.abs().max().item()), err


# (batch, Dk, L, R, N): the S²Mamba BSS shape (49 channels: 16-lane blocks + 1), odd small ones
@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(2, 49, 128, 4, 16), (1, 9, 17, 3, 16), (2, 3, 6, 2, 7)])
@pytest.mark.parametrize("true_reverse", [False, True])
def test_bidirectional_scan_matches_reference(shape, dtype, true_reverse):
    batch, Dk, L, R, N = shape
    x, proj, wdt, bias, A, D = make(batch, Dk, L, 2, R, N, dtype, seed=1)
    fwd, rev = list(range(L)), list(range(L))[::-1]
    src = [fwd, rev if true_reverse else fwd]
    dst = [fwd, rev]
    want = composed(x, proj, wdt, bias, A, D, src, dst, (0, 1))
    with torch.inference_mode():
        got = multi_scan_infer(x, proj, wdt, bias, A, D, src, dst, (0, 1))
    err = (got.double() - want).abs().max().item()
    assert err <= tol(dtype) * max(1.0, want.abs().max().item()), err


@needs_native
def test_bad_tables_and_shapes_raise_model_error():
    x, proj, wdt, bias, A, D = make(1, 4, 6, 2, 2, 3, torch.float32)
    ok = [list(range(6))] * 2
    with pytest.raises(ModelError, match="outside"):
        multi_scan_infer(x, proj, wdt, bias, A, D, [list(range(1, 7))] * 2, ok, (0, 1))
    with pytest.raises(ModelError, match="src must be"):
        multi_scan_infer(x, proj, wdt, bias, A, D, ok[:1], ok, (0, 1))
    with pytest.raises(ModelError, match="permutation"):
        multi_scan_infer(x, proj, wdt, bias, A, D, ok, ok, (0, 0))
    with pytest.raises(ModelError, match="proj must be"):
        multi_scan_infer(x, proj[:, :, :, 1:], wdt, bias, A, D, ok, ok, (0, 1))


def _grads(fn, inputs, gy):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    y = fn(*leaves)
    return y, torch.autograd.grad(y, leaves, gy.to(y.dtype))


# (batch, Dk, K, L, R, N, cross): PCS (cross-scan tables, K = 4), BSS-like (K = 2, flipped output),
# odd channel counts, batch 1, N other than 16
GRAD_SHAPES = [(2, 19, 4, 12, 4, 16, True), (1, 9, 2, 17, 3, 16, False), (3, 5, 2, 6, 2, 7, False)]


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", GRAD_SHAPES)
def test_gradients_match_reference(shape, dtype):
    batch, Dk, K, L, R, N, cross = shape
    inputs = make(batch, Dk, L, K, R, N, dtype, seed=2)
    if cross:
        src, dst = cross_tables(3, 4)
        order = (0, 2, 1, 3)
    else:
        fwd = list(range(L))
        src, dst, order = [fwd, fwd], [fwd, fwd[::-1]], (0, 1)
    gy = torch.randn(batch, Dk, L, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    yr, want = _grads(lambda *t: composed(*t, src, dst, order), [t.double() for t in inputs], gy)
    yc, have = _grads(lambda *t: multi_scan(*t, src, dst, order), inputs, gy)
    assert yc.dtype == dtype
    scale = max(1.0, yr.abs().max().item())
    assert (yc.detach().double() - yr.detach()).abs().max().item() <= tol(dtype) * scale
    for name, a, b in zip(("x", "proj", "dt_weight", "dt_bias", "A", "D"), want, have):
        assert b.shape == a.shape, name
        err = (b.double() - a).abs().max().item()
        assert err <= 4 * tol(dtype) * max(1.0, a.abs().max().item()), (name, err)


@needs_native
def test_multi_scan_without_grad_is_the_inference_kernel():
    inputs = make(2, 7, 9, 2, 2, 16, torch.float32, seed=3)
    fwd = list(range(9))
    args = ([fwd, fwd], [fwd, fwd[::-1]], (0, 1))
    with torch.no_grad():
        a = multi_scan(*inputs, *args)
    b = multi_scan(*[t.clone().requires_grad_() for t in inputs], *args)
    assert b.requires_grad and torch.equal(a, b.detach())


@needs_native
def test_portable_build_matches_reference(tmp_path, monkeypatch):
    """The fallback build (no -march=native: 8-lane blocks, no AVX-512 intrinsics) gives the same
    results: forward and gradients of the fused scan, and the plain inference kernel."""
    import ctypes
    import os
    import shutil

    from geolesf.ops.selective_scan import native, selective_scan

    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    flags = native._build_flag_sets()[1]
    assert "-march=native" not in flags
    errors = []
    path = native._cached_build(compiler, flags, native._kernel_source_bytes(), tmp_path, errors)
    assert path is not None, errors
    lib = ctypes.CDLL(str(path))
    native._declare_signatures(lib)
    monkeypatch.setitem(native._NATIVE, "lib", lib)
    test_gradients_match_reference(GRAD_SHAPES[0], torch.float32)
    test_bidirectional_scan_matches_reference((2, 49, 128, 4, 16), torch.float32, False)
    g = torch.Generator().manual_seed(4)
    u, delta = torch.randn(2, 18, 21, generator=g), torch.randn(2, 18, 21, generator=g) * 0.5 - 1
    A = -(torch.rand(18, 16, generator=g) * 2 + 0.1)
    B, C = torch.randn(2, 2, 16, 21, generator=g), torch.randn(2, 2, 21, 16, generator=g).mT  # C strided
    want = selective_scan_reference(u.double(), delta.double(), A.double(), B.double(), C.double(), delta_softplus=True)
    for grad in (False, True):
        leaves = [t.clone().requires_grad_(grad) for t in (u, delta, A, B)]
        got = selective_scan(*leaves, C, delta_softplus=True, backend="cpu")
        assert (got.detach().double() - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item())
        if grad:
            got.sum().backward()
            assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in leaves)
