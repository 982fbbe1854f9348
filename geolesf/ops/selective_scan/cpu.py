"""The ``cpu`` backend: the native C kernel for CPU tensors when it compiles, else pure PyTorch."""

from __future__ import annotations

from geolesf.errors import ModelError
from geolesf.ops.selective_scan.contract import _check, _compute_dtype
from geolesf.ops.selective_scan.native import (
    _NATIVE,
    _NativeSelectiveScan,
    native_kernel_available,
)
from geolesf.ops.selective_scan.torch_scan import _CHUNK_ELEMS, _CpuSelectiveScan


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
