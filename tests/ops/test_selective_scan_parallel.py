"""How the native kernels' batch parts are run (``native.run_kernel``, ``gl_run`` in ``scan_kernel.c``).

Where PyTorch runs on OpenMP, the parts go to PyTorch's own team through ``GOMP_parallel`` of the
runtime PyTorch loaded; elsewhere to a Python thread pool; with one thread, one after another. The
team and the pool must give the same bytes: every item is computed by one part whichever thread
runs it, and the per-part partial sums (dA, dD, d(delta_bias), dW) are reduced in part order. One
thread splits the batch into fewer parts: the same bytes per item, the sums in another order.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from geolesf.ops.selective_scan import native, native_kernel_available, selective_scan
from geolesf.ops.selective_scan.fused import multi_scan

pytestmark = pytest.mark.skipif(not native_kernel_available(), reason="no C compiler for the native kernel")

OPENMP_TORCH = "parallel backend: OpenMP" in torch.__config__.parallel_info()


def _omp_runtimes():
    """The OpenMP runtime files mapped into this process."""
    names = set()
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and native._OMP_RUNTIME.match(os.path.basename(parts[5])):
            names.add(os.path.realpath(parts[5]))
    return names


@pytest.fixture
def two_threads(torch_threads):
    torch_threads(2)


def _scan_inputs(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch, K, Dk, L, N = 13, 2, 21, 19, 16
    KD = K * Dk
    t = [torch.randn(batch, KD, L, generator=g), torch.randn(batch, KD, L, generator=g) * 0.5 - 1,
         -(torch.rand(KD, N, generator=g) * 2 + 0.1), torch.randn(batch, K, N, L, generator=g),
         torch.randn(batch, K, N, L, generator=g), torch.randn(KD, generator=g), torch.randn(KD, generator=g) * 0.3]
    return [x.to(dtype) for x in t]


# the outputs that are sums over the batch (per-part partial sums): the gradients of A, D and
# delta_bias (selective_scan) and of dt_weight, dt_bias, A and D (multi_scan)
SUMS_SCAN, SUMS_FUSED = {3, 6, 7}, {3, 4, 5, 6}


def _scan_run(inputs):
    leaves = [t.clone().requires_grad_() for t in inputs]
    y = selective_scan(*leaves, delta_softplus=True, backend="cpu")
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=y.dtype)
    return [y.detach(), *torch.autograd.grad(y, leaves, gy)]


def _fused_run(dtype):
    g = torch.Generator().manual_seed(1)
    batch, Dk, K, L, R, N = 11, 9, 2, 17, 3, 16
    x = torch.randn(batch, L, Dk, generator=g).to(dtype).transpose(1, 2)
    proj = torch.randn(batch, L, K, R + 2 * N, generator=g).to(dtype)
    wdt = (torch.randn(K, Dk, R, generator=g) * 0.5).to(dtype)
    bias = (torch.randn(K * Dk, generator=g) * 0.3 - 1).to(dtype)
    A = -(torch.rand(K * Dk, N, generator=g) * 2 + 0.1).to(dtype)
    D = torch.randn(K * Dk, generator=g).to(dtype)
    rows = list(range(L))
    tables = [rows, rows[::-1]]
    leaves = [t.detach().clone().requires_grad_() for t in (x, proj, wdt, bias, A, D)]
    y = multi_scan(*leaves, tables, tables, (0, 1))
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(4), dtype=y.dtype)
    return [y.detach(), *torch.autograd.grad(y, leaves, gy)]


def _ways(monkeypatch, run):
    """run() with the parts on PyTorch's OpenMP team, on the Python pool, and on one thread."""
    out = {"team": run()}
    with monkeypatch.context() as m:
        m.setitem(native._OMP, "tried", True)
        m.setitem(native._OMP, "entry", None)
        out["pool"] = run()
    torch.set_num_threads(1)
    out["serial"] = run()
    torch.set_num_threads(2)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_team_pool_and_serial_runs_are_bitwise_equal(dtype, two_threads, monkeypatch):
    inputs = _scan_inputs(dtype)
    runs = [(_ways(monkeypatch, lambda: _scan_run(inputs)), SUMS_SCAN),
            (_ways(monkeypatch, lambda: _fused_run(dtype)), SUMS_FUSED)]
    for got, sums in runs:
        assert len(got["pool"]) == len(got["serial"]) == len(got["team"])
        for i, (a, b, c) in enumerate(zip(got["team"], got["pool"], got["serial"])):
            assert torch.equal(a, b), i
            if i in sums:
                f32 = dtype == torch.float32
                torch.testing.assert_close(a, c, rtol=1e-5 if f32 else 1e-12, atol=1e-6 if f32 else 1e-12)
            else:
                assert torch.equal(a, c), i


@pytest.mark.skipif(not (sys.platform.startswith("linux") and OPENMP_TORCH),
                    reason="PyTorch's OpenMP runtime is looked up in /proc/self/maps (Linux, OpenMP builds)")
def test_parts_run_on_pytorchs_own_openmp_runtime(two_threads):
    before = _omp_runtimes()
    entry = native._openmp_parallel_entry()
    assert entry, "GOMP_parallel of PyTorch's OpenMP runtime was not found"
    _scan_run(_scan_inputs(torch.float32))
    # no second runtime (with threads of its own) entered the process
    assert _omp_runtimes() == before and len(before) >= 1


def test_unknown_kernel_and_failed_parts_are_errors(monkeypatch):
    monkeypatch.setitem(native.KERNEL_IDS, "bogus", 9)
    with pytest.raises(RuntimeError, match="no kernel 18"):
        native.run_kernel("bogus", torch.float32, [], 4, 2)
    lib = native._NATIVE["lib"]
    args = (native.ctypes.c_int64 * 1)(0)
    assert lib.gl_run(-1, args, 4, 2, 0, 2, None, 1) == 2
