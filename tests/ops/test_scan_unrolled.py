"""The ``unrolled`` selective-scan backend (the one the ONNX export traces) equals the ``reference`` definition."""

from __future__ import annotations

import pytest
import torch

from geolesf.errors import ModelError
from geolesf.ops.selective_scan import selective_scan, selective_scan_reference
from geolesf.ops.selective_scan.unrolled import selective_scan_unrolled


def _inputs(batch: int, groups: int, per_group: int, n: int, length: int, three_d: bool = False):
    g = torch.Generator().manual_seed(batch * 100 + length)
    c = groups * per_group
    u = torch.randn(batch, c, length, generator=g, dtype=torch.float64)
    delta = torch.randn(batch, c, length, generator=g, dtype=torch.float64) * 0.5
    A = -torch.rand(c, n, generator=g, dtype=torch.float64) * 4
    shape = (batch, n, length) if three_d else (batch, groups, n, length)
    B = torch.randn(*shape, generator=g, dtype=torch.float64)
    C = torch.randn(*shape, generator=g, dtype=torch.float64)
    D = torch.randn(c, generator=g, dtype=torch.float64)
    bias = torch.randn(c, generator=g, dtype=torch.float64) * 0.1
    return u, delta, A, B, C, D, bias


@pytest.mark.parametrize("groups,per_group,n,length,three_d,softplus,with_d", [
    (4, 8, 16, 49, False, True, True),    # S²Mamba PCS layout (4 directions)
    (2, 9, 4, 32, False, True, True),     # BSS layout (positions as channels)
    (1, 6, 3, 7, True, False, False),     # B, C as (batch, N, L): one group
])
def test_unrolled_equals_reference(groups, per_group, n, length, three_d, softplus, with_d):
    u, delta, A, B, C, D, bias = _inputs(3, groups, per_group, n, length, three_d)
    D, bias = (D, bias) if with_d else (None, None)
    ref = selective_scan_reference(u, delta, A, B, C, D, bias, softplus)
    got = selective_scan_unrolled(u, delta, A, B, C, D, bias, softplus)
    assert got.dtype == torch.float64 and got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    via = selective_scan(u, delta, A, B, C, D, bias, softplus, backend="unrolled")
    torch.testing.assert_close(via, ref, rtol=1e-12, atol=1e-12)


def test_unrolled_gradients_equal_reference():
    inputs = [t.requires_grad_() for t in _inputs(2, 2, 4, 5, 9)]
    ref = torch.autograd.grad(selective_scan_reference(*inputs, True).square().sum(), inputs)
    got = torch.autograd.grad(selective_scan_unrolled(*inputs, True).square().sum(), inputs)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_unrolled_keeps_the_contract_checks():
    u, delta, A, B, C, D, bias = _inputs(2, 2, 4, 5, 9)
    with pytest.raises(ModelError, match="A must be"):
        selective_scan_unrolled(u, delta, A[:3], B, C, D, bias)
