"""The channel-blocked forward kernel (inference path and training forward) and CUDA routing of ``auto``."""

from __future__ import annotations

import pytest
import torch

from geolesf.ops import selective_scan as ss
from geolesf.ops.selective_scan import (
    dispatch,
    native,
    native_kernel_available,
    resolve_backend,
    selective_scan,
    selective_scan_reference,
)

needs_native = pytest.mark.skipif(not native_kernel_available(), reason="no C compiler for the native kernel")

# (K, channels per group, L, N): the two S²Mamba shapes, a group size that is not a multiple of
# the 8-channel block (padded lanes) and a state size other than the specialised N = 16.
SHAPES = [(4, 128, 49, 16), (2, 49, 128, 16), (3, 5, 7, 5), (1, 9, 3, 16)]


def make(batch, K, Dk, L, N, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    KD = K * Dk
    u = torch.randn(batch, KD, L, generator=g, dtype=torch.float64)
    delta = torch.randn(batch, KD, L, generator=g, dtype=torch.float64) * 0.5 - 1.0
    A = -(torch.rand(KD, N, generator=g, dtype=torch.float64) * 2 + 0.1)
    # B and C as views of one projection output, as S²Mamba passes them (non-contiguous, strided)
    proj = torch.randn(batch, K, 3 + 2 * N, L, generator=g, dtype=torch.float64).to(dtype)
    D = torch.randn(KD, generator=g, dtype=torch.float64)
    bias = torch.randn(KD, generator=g, dtype=torch.float64) * 0.3
    u, delta, A, D, bias = (t.to(dtype) for t in (u, delta, A, D, bias))
    return [u, delta, A, proj[:, :, 3:3 + N], proj[:, :, 3 + N:], D, bias]


def tol(dtype):
    return 1e-5 if dtype == torch.float32 else 1e-11


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_inference_path_matches_reference(shape, dtype):
    K, Dk, L, N = shape
    x = make(3, K, Dk, L, N, dtype)
    assert not x[3].is_contiguous()
    want = selective_scan_reference(*[t.double() for t in x], delta_softplus=True)
    with torch.inference_mode():
        got = selective_scan(*x, delta_softplus=True, backend="cpu")
    assert got.dtype == dtype
    err = (got.double() - want).abs().max().item()
    assert err <= tol(dtype) * max(1.0, want.abs().max().item()), err


@needs_native
def test_inference_path_skips_autograd(monkeypatch):
    x = [t.requires_grad_() for t in make(2, 2, 9, 11, 16, torch.float32)[:3]] + make(2, 2, 9, 11, 16, torch.float32)[3:]
    with torch.no_grad():
        want = selective_scan(*x, delta_softplus=True, backend="cpu")

    def fail(*_args):
        raise AssertionError("the autograd Function ran without a gradient to compute")

    monkeypatch.setattr(native._NativeSelectiveScan, "apply", fail)
    for ctx in (torch.no_grad, torch.inference_mode):
        with ctx():
            got = selective_scan(*x, delta_softplus=True, backend="cpu")
        assert torch.equal(got, want) and not got.requires_grad
    with pytest.raises(AssertionError, match="autograd Function"):
        selective_scan(*x, delta_softplus=True, backend="cpu")


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES[:3])
def test_training_path_forward_and_gradients(shape, dtype):
    K, Dk, L, N = shape
    x = make(2, K, Dk, L, N, dtype)
    ref = [t.double().detach().requires_grad_() for t in x]
    got = [t.detach().requires_grad_() for t in x]
    yr = selective_scan_reference(*ref, delta_softplus=True)
    yc = selective_scan(*got, delta_softplus=True, backend="cpu")
    gy = torch.randn(yr.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    want = torch.autograd.grad(yr, ref, gy)
    have = torch.autograd.grad(yc, got, gy.to(dtype))
    scale = max(1.0, yr.abs().max().item())
    assert (yc.detach().double() - yr.detach()).abs().max().item() <= tol(dtype) * scale
    for name, a, b in zip(("u", "delta", "A", "B", "C", "D", "delta_bias"), want, have):
        err = (b.double() - a).abs().max().item()
        assert err <= 4 * tol(dtype) * max(1.0, a.abs().max().item()), (name, err)


@needs_native
def test_inference_and_training_forward_agree_bitwise():
    x = make(4, 2, 49, 128, 16, torch.float32)
    with torch.inference_mode():
        a = selective_scan(*x, delta_softplus=True, backend="cpu")
    b = selective_scan(*[t.clone().requires_grad_() for t in x], delta_softplus=True, backend="cpu")
    assert torch.equal(a, b.detach())


def test_auto_on_cuda_without_mamba_ssm_is_reference(monkeypatch):
    monkeypatch.delenv(ss.ENV_VAR, raising=False)
    monkeypatch.setattr(dispatch, "mamba_ssm_available", lambda: False)
    assert resolve_backend("auto", "cuda") == "reference"
    assert resolve_backend("auto", torch.device("cuda", 0)) == "reference"
    assert resolve_backend("auto", "cpu") == "cpu"
    assert resolve_backend("cpu", "cuda") == "cpu"  # explicit names keep working
    assert resolve_backend("reference", "cuda") == "reference"
    monkeypatch.setenv(ss.ENV_VAR, "cpu")
    assert resolve_backend("auto", "cuda") == "cpu"  # the environment variable still overrides auto
    monkeypatch.delenv(ss.ENV_VAR)
    monkeypatch.setattr(dispatch, "mamba_ssm_available", lambda: True)
    assert resolve_backend("auto", "cuda") == "mamba_ssm"
    assert resolve_backend("auto", "cpu") == "cpu"
