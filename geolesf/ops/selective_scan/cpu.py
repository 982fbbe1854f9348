"""The ``cpu`` backend: the native C kernel for CPU tensors when it compiles, else pure PyTorch."""

from __future__ import annotations

import torch

from geolesf.errors import ModelError
from geolesf.ops.selective_scan.contract import _LOG2E, _check, _compute_dtype
from geolesf.ops.selective_scan.native import (
    _NATIVE,
    _NativeSelectiveScan,
    native_forward,
    native_kernel_available,
)
from geolesf.ops.selective_scan.torch_scan import _CHUNK_ELEMS, _CpuSelectiveScan


def _needs_grad(*tensors):
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def selective_scan_cpu(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False, *,
                       impl="auto", chunk_elems=None):
    """The ``cpu`` backend: the native C kernel when available, else pure PyTorch.

    ``impl``: ``"auto"`` (native kernel for CPU tensors when it compiles), ``"native"``
    (require it; ModelError if unavailable) or ``"torch"`` (the chunked pure-PyTorch
    implementation, which also runs on GPUs). ``chunk_elems`` tunes the torch path.

    Native and no gradient needed (``torch.no_grad``/``torch.inference_mode``, or no input
    requires grad): the forward-only kernel is called directly, without the autograd
    Function, and ``B``/``C`` are passed as strided views (no layout copy).
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
    if use_native and not _needs_grad(u, delta, A, B, C, D, delta_bias):
        return native_forward(prep(u), prep(delta), (A.to(dtype) * _LOG2E).contiguous(), B.to(dtype),
                              C.to(dtype), prep(D), prep(delta_bias), delta_softplus)
    args = (prep(u), prep(delta), prep(A), prep(B), prep(C), prep(D), prep(delta_bias), bool(delta_softplus))
    if use_native:
        return _NativeSelectiveScan.apply(*args)
    return _CpuSelectiveScan.apply(*args, int(chunk_elems or _CHUNK_ELEMS))
