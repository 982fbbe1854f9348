"""The ``mamba_ssm`` backend: the official CUDA selective-scan kernel (CUDA tensors only)."""

from __future__ import annotations

import torch

from geolesf.ops.selective_scan.contract import _check

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
