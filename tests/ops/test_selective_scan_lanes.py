"""The AVX-512 work layout of the ``cpu`` kernel (``scan_kernel_avx512*.h``): channel-lane blocks,
item-lane blocks for the channels left over by a group, transposes with row/time tails, B and C
read through any strides, and batch ranges that are not multiples of 16 items.

On CPUs without AVX-512 the same calls run the portable kernel, which must give the same results.
"""

from __future__ import annotations

import pytest
import torch

from geolesf.ops.selective_scan import native_kernel_available, selective_scan, selective_scan_reference

pytestmark = pytest.mark.skipif(not native_kernel_available(), reason="no C compiler for the native kernel")

# (batch, K, channels per group, L): 1 channel block + 4 item-lane channels and a time tail of 3;
# S²Mamba's spectral shape (3 blocks + 1 leftover) with items in chunks 16 + 16 + 5; groups
# smaller than a block (item lanes only); a time length that is a multiple of 16 (whole tiles,
# the non-temporal stores).
SHAPES = [(5, 2, 20, 35), (37, 2, 49, 32), (18, 3, 7, 16), (3, 1, 16, 64)]


def _inputs(batch, K, Dk, L, *, time_major_bc, seed=0):
    g = torch.Generator().manual_seed(seed)
    KD, N = K * Dk, 16
    u = torch.randn(batch, KD, L, generator=g, dtype=torch.float64)
    delta = torch.randn(batch, KD, L, generator=g, dtype=torch.float64) * 0.5 - 1.0
    A = -(torch.rand(KD, N, generator=g, dtype=torch.float64) * 2 + 0.1)
    if time_major_bc:  # (batch, K, L, N) storage seen as (batch, K, N, L): time stride N, not 1
        B = torch.randn(batch, K, L, N, generator=g, dtype=torch.float64).transpose(2, 3)
        C = torch.randn(batch, K, L, N, generator=g, dtype=torch.float64).transpose(2, 3)
    else:
        B = torch.randn(batch, K, N, L, generator=g, dtype=torch.float64)
        C = torch.randn(batch, K, N, L, generator=g, dtype=torch.float64)
    D = torch.randn(KD, generator=g, dtype=torch.float64)
    bias = torch.randn(KD, generator=g, dtype=torch.float64) * 0.3
    return [u, delta, A, B, C, D, bias]


@pytest.fixture
def one_thread(torch_threads):
    """One batch range per call, so that whole 16-item chunks and the last partial one are exercised."""
    torch_threads(1)


@pytest.mark.parametrize("time_major_bc", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_gradients_match_reference(shape, time_major_bc, one_thread):
    x64 = _inputs(*shape, time_major_bc=time_major_bc)
    leaves = [t.clone().requires_grad_() for t in x64]
    want = selective_scan_reference(*leaves, delta_softplus=True)
    gy = torch.randn(want.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    want_grads = torch.autograd.grad(want, leaves, gy)

    x32 = [t.float().requires_grad_() for t in x64]
    got = selective_scan(*x32, delta_softplus=True, backend="cpu")
    scale = max(1.0, want.abs().max().item())
    assert (got.double() - want).abs().max().item() <= 1e-5 * scale
    with torch.inference_mode():
        infer = selective_scan(*[t.detach() for t in x32], delta_softplus=True, backend="cpu")
    assert torch.equal(infer, got.detach())  # one forward kernel for inference and training
    grads = torch.autograd.grad(got, x32, gy.float())
    for name, a, b in zip("u delta A B C D bias".split(), want_grads, grads):
        s = max(1.0, a.abs().max().item())
        assert (b.double() - a).abs().max().item() <= 2e-5 * s, name


def test_float64_unchanged_by_the_float_layout(one_thread):
    """float64 runs the portable kernel: equal to the reference to rounding."""
    x = _inputs(37, 2, 49, 32, time_major_bc=False)
    got = selective_scan(*x, delta_softplus=True, backend="cpu")
    torch.testing.assert_close(got, selective_scan_reference(*x, delta_softplus=True), atol=1e-10, rtol=0)
