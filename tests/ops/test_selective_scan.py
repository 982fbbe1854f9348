"""Selective scan backends agree with the recurrence (methods.md §2.12 test 1)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from geolesf.errors import ModelError
from geolesf.ops import selective_scan as ss
from geolesf.ops.selective_scan import (
    mamba_ssm_available,
    native_kernel_available,
    resolve_backend,
    selective_scan,
    selective_scan_cpu,
    selective_scan_reference,
)

NAMES = ("u", "delta", "A", "B", "C", "D", "delta_bias")


def make(batch=2, K=2, Dk=4, N=4, L=13, dtype=torch.float64, seed=0):
    """The §2.12 shapes: B=2, K·D=8, N=4, L=13; A < 0."""
    g = torch.Generator().manual_seed(seed)
    KD = K * Dk
    u = torch.randn(batch, KD, L, generator=g, dtype=dtype)
    delta = torch.randn(batch, KD, L, generator=g, dtype=dtype) * 0.5
    A = -(torch.rand(KD, N, generator=g, dtype=dtype) * 2 + 0.1)
    B = torch.randn(batch, K, N, L, generator=g, dtype=dtype)
    C = torch.randn(batch, K, N, L, generator=g, dtype=dtype)
    D = torch.randn(KD, generator=g, dtype=dtype)
    bias = torch.randn(KD, generator=g, dtype=dtype) * 0.3
    return [u, delta, A, B, C, D, bias]


def explicit_loop(u, delta, A, B, C, D, bias, softplus):
    """Scalar-by-scalar transcription of the §2.5 equations."""
    batch, KD, L = u.shape
    K, N = B.shape[1], A.shape[1]
    y = torch.zeros_like(u)
    for b in range(batch):
        for d in range(KD):
            k = d // (KD // K)
            h = [0.0] * N
            for t in range(L):
                z = float(delta[b, d, t] + (bias[d] if bias is not None else 0.0))
                dt = float(F.softplus(torch.tensor(z, dtype=torch.float64))) if softplus else z
                acc = 0.0
                for n in range(N):
                    h[n] = float(torch.exp(torch.tensor(dt * float(A[d, n]), dtype=torch.float64))) * h[n] \
                        + dt * float(B[b, k, n, t]) * float(u[b, d, t])
                    acc += float(C[b, k, n, t]) * h[n]
                y[b, d, t] = acc + (float(D[d]) * float(u[b, d, t]) if D is not None else 0.0)
    return y


def closed_form(u, delta, A, B, C, D, bias, softplus):
    """Cumulative-sum form h[t] = sum_{s<=t} exp(S[t] - S[s]) dt[s] B[s] u[s]."""
    batch, KD, L = u.shape
    K = B.shape[1]
    dt = delta + bias[:, None] if bias is not None else delta
    dt = F.softplus(dt) if softplus else dt
    Bc = B.repeat_interleave(KD // K, 1)  # (b, KD, N, L)
    Cc = C.repeat_interleave(KD // K, 1)
    S = torch.cumsum(dt[..., None] * A[None, :, None, :], dim=2)  # (b, KD, L, N)
    diff = S[:, :, :, None, :] - S[:, :, None, :, :]  # (b, KD, t, s, N)
    causal = torch.tril(torch.ones(L, L, dtype=torch.bool))[None, None, :, :, None]
    w = torch.where(causal, torch.exp(torch.where(causal, diff, torch.zeros_like(diff))), torch.zeros_like(diff))
    x = (dt * u)[..., None] * Bc.transpose(2, 3)  # (b, KD, s, N)
    h = (w * x[:, :, None]).sum(3)  # (b, KD, t, N)
    y = (h * Cc.transpose(2, 3)).sum(-1)
    return y + D[:, None] * u if D is not None else y


def cpu_native(*a, **k):
    return selective_scan_cpu(*a, impl="native", **k)


def cpu_torch(*a, **k):
    return selective_scan_cpu(*a, impl="torch", **k)


def cpu_torch_chunked(*a, **k):
    return selective_scan_cpu(*a, impl="torch", chunk_elems=1, **k)  # one batch element per chunk


IMPLS = {"reference": selective_scan_reference, "cpu_torch": cpu_torch, "cpu_torch_chunked": cpu_torch_chunked}
if native_kernel_available():
    IMPLS["cpu_native"] = cpu_native


@pytest.mark.parametrize("softplus", [True, False])
def test_all_forms_agree_float64(softplus):
    x = make()
    want = explicit_loop(*x, softplus)
    torch.testing.assert_close(closed_form(*x, softplus), want, atol=1e-10, rtol=0)
    for name, fn in IMPLS.items():
        got = fn(*x, delta_softplus=softplus)
        assert got.dtype == torch.float64, name
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0, msg=name)
    torch.testing.assert_close(selective_scan(*x, delta_softplus=softplus, backend="cpu"), want, atol=1e-10, rtol=0)


@pytest.mark.parametrize("N,L", [(4, 13), (16, 49), (16, 128)])
def test_float32_matches_float64(N, L):
    x = make(batch=3, K=2, Dk=5, N=N, L=L)
    want = selective_scan_reference(*x, delta_softplus=True)
    for name, fn in IMPLS.items():
        got = fn(*[t.float() for t in x], delta_softplus=True)
        assert got.dtype == torch.float32, name
        err = (got.double() - want).abs().max().item()
        assert err <= 1e-5 * max(1.0, want.abs().max().item()), (name, err)


def test_optional_inputs_and_ungrouped_B():
    u, delta, A, B, C, D, bias = make(K=1)
    for name, fn in IMPLS.items():
        want = selective_scan_reference(u, delta, A, B, C)
        torch.testing.assert_close(fn(u, delta, A, B[:, 0], C[:, 0]), want, atol=1e-10, rtol=0, msg=name)
        want = selective_scan_reference(u, delta, A, B, C, D=D)
        torch.testing.assert_close(fn(u, delta, A, B, C, D=D), want, atol=1e-10, rtol=0, msg=name)


def _grads(fn, x, dtype=torch.float64):
    leaves = [t.to(dtype).clone().requires_grad_() for t in x]
    y = fn(*leaves, delta_softplus=True)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64).to(dtype)
    return torch.autograd.grad(y, leaves, g)


def test_gradients_agree_with_reference():
    x = make(batch=3, K=2, Dk=3, N=4, L=11)
    want = _grads(selective_scan_reference, x)
    for name, fn in IMPLS.items():
        if name == "reference":
            continue
        for n, a, b in zip(NAMES, want, _grads(fn, x)):
            torch.testing.assert_close(b, a, atol=1e-10, rtol=1e-9, msg=f"{name} d{n}")


def test_gradients_agree_float32():
    x = make(batch=2, K=4, Dk=8, N=16, L=49)
    want = _grads(selective_scan_reference, x)
    for name, fn in IMPLS.items():
        for n, a, b in zip(NAMES, want, _grads(fn, x, torch.float32)):
            scale = a.abs().max().item()
            assert (b.double() - a).abs().max().item() <= 2e-5 * max(1.0, scale), f"{name} d{n}"


@pytest.mark.parametrize("impl", ["torch", "native"])
def test_gradcheck_cpu_backend(impl):
    if impl == "native" and not native_kernel_available():
        pytest.skip("no C compiler for the native kernel")
    x = [t.requires_grad_() for t in make(batch=2, K=2, Dk=2, N=3, L=5)]

    def fn(*a):
        return selective_scan_cpu(*a, delta_softplus=True, impl=impl)

    assert torch.autograd.gradcheck(fn, x, eps=1e-6, atol=1e-6)


def test_backend_selection(monkeypatch):
    monkeypatch.delenv(ss.ENV_VAR, raising=False)
    assert resolve_backend("auto", "cpu") == "cpu"
    assert resolve_backend("reference", "cpu") == "reference"
    monkeypatch.setenv(ss.ENV_VAR, "reference")
    assert resolve_backend("auto", "cpu") == "reference"
    assert resolve_backend("cpu", "cpu") == "cpu"  # an explicit argument wins
    monkeypatch.setenv(ss.ENV_VAR, "bogus")
    with pytest.raises(ModelError, match="GEOLESF_SCAN_BACKEND"):
        resolve_backend("auto", "cpu")
    monkeypatch.delenv(ss.ENV_VAR)
    with pytest.raises(ModelError, match="unknown selective-scan backend"):
        selective_scan(*make(), backend="nope")
    with pytest.raises(ModelError, match="mamba_ssm"):
        resolve_backend("mamba_ssm", "cpu")


def test_native_can_be_disabled(monkeypatch):
    monkeypatch.setenv(ss.NATIVE_ENV_VAR, "0")
    assert not native_kernel_available()
    x = make()
    torch.testing.assert_close(selective_scan(*x, backend="cpu"), selective_scan_reference(*x), atol=1e-10, rtol=0)
    with pytest.raises(ModelError, match="native"):
        selective_scan_cpu(*x, impl="native")


def test_shape_errors():
    u, delta, A, B, C, D, bias = make()
    with pytest.raises(ModelError, match="delta"):
        selective_scan(u, delta[:, :, :-1], A, B, C)
    with pytest.raises(ModelError, match="B must be"):
        selective_scan(u, delta, A, B[..., :-1], C)
    with pytest.raises(ModelError, match="groups"):
        selective_scan(u, delta, A, B.repeat(1, 3, 1, 1)[:, :3], C.repeat(1, 3, 1, 1)[:, :3])


@pytest.mark.skipif(not (torch.cuda.is_available() and mamba_ssm_available()), reason="needs mamba_ssm on CUDA")
def test_matches_mamba_ssm_kernel():  # pragma: no cover - GPU only
    x = [t.float().cuda() for t in make(batch=2, K=4, Dk=16, N=16, L=49)]
    want = selective_scan(*x, delta_softplus=True, backend="reference")
    got = selective_scan(*x, delta_softplus=True, backend="mamba_ssm")
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_native_backward_ignores_stale_scratch_memory():
    """Regression: the native backward once read h[t-1] at t = 0 from uninitialised scratch and
    multiplied it by 0, so NaN/Inf left in reused heap memory poisoned the gradients (seen as
    a sporadic NaN loss while training S²Mamba). A NaN run first leaves NaNs in freed scratch."""
    from geolesf.ops.selective_scan import native_kernel_available, selective_scan_cpu

    if not native_kernel_available():
        pytest.fail("the native CPU kernel did not compile on this machine")
    torch.manual_seed(0)
    batch, K, D, L, N = 2, 2, 3, 16, 16

    def inputs(poison):
        u = torch.randn(batch, K * D, L)
        if poison:
            u[:, :, :] = float("nan")
        leaves = [u, torch.randn(batch, K * D, L), -torch.rand(K * D, N) - 0.1,
                  torch.randn(batch, K, N, L), torch.randn(batch, K, N, L), torch.randn(K * D), torch.randn(K * D)]
        return [t.requires_grad_() for t in leaves]

    for _ in range(20):
        bad = inputs(poison=True)
        y = selective_scan_cpu(*bad, delta_softplus=True, impl="native")
        torch.autograd.grad(y.sum(), bad)
        good = inputs(poison=False)
        y = selective_scan_cpu(*good, delta_softplus=True, impl="native")
        grads = torch.autograd.grad(y.sum(), good)
        assert all(torch.isfinite(g).all() for g in grads)


def test_native_kernel_source_is_package_data_and_keys_the_cache(tmp_path, monkeypatch):
    """The kernel is compiled from the .c/.h files beside native.py; the cached library is
    reused while they are unchanged and rebuilt when any of them changes."""
    import shutil

    from geolesf.ops.selective_scan import native

    for name in native.KERNEL_SOURCES:
        assert (native.KERNEL_DIR / name).is_file(), name
    if not native_kernel_available():
        pytest.skip("no C compiler for the native kernel")
    src = tmp_path / "src"
    src.mkdir()
    for name in native.KERNEL_SOURCES:
        shutil.copy(native.KERNEL_DIR / name, src / name)
    monkeypatch.setattr(native, "KERNEL_DIR", src)
    monkeypatch.setenv(native.KERNEL_CACHE_ENV_VAR, str(tmp_path / "cache"))

    def built():
        return sorted(p.name for p in (tmp_path / "cache").glob("selective_scan_*.so"))

    native._compile_native()
    first = built()
    native._compile_native()
    assert built() == first and len(first) == 1
    body = src / "scan_kernel_body.h"
    body.write_text(body.read_text() + "\n/* edited */\n")
    lib = native._compile_native()
    assert len(built()) == 2 and hasattr(lib, "gl_scan_infer_f32")
