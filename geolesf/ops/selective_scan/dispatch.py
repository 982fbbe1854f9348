"""Backend selection and the public :func:`selective_scan` entry point."""

from __future__ import annotations

import os

import torch

from geolesf.errors import ModelError
from geolesf.ops.selective_scan.cpu import selective_scan_cpu
from geolesf.ops.selective_scan.mamba import (
    _selective_scan_mamba_ssm,
    mamba_ssm_available,
)
from geolesf.ops.selective_scan.reference import selective_scan_reference
from geolesf.ops.selective_scan.unrolled import selective_scan_unrolled

BACKENDS = ("auto", "reference", "cpu", "mamba_ssm", "unrolled")
ENV_VAR = "GEOLESF_SCAN_BACKEND"


def resolve_backend(backend: str = "auto", device: torch.device | str | None = None) -> str:
    """The concrete backend (``reference``, ``cpu`` or ``mamba_ssm``) a call would use.

    ``auto``: ``mamba_ssm`` for CUDA tensors when it imports; ``reference`` for CUDA tensors
    without it (measured on an H200, ``benchmarks/results/gpu.json``: the ``cpu`` backend's
    pure-PyTorch path is 4–10× slower there than ``reference``); ``cpu`` otherwise.
    """
    if backend is None:
        backend = "auto"
    name = str(backend).strip().lower()
    source = "backend argument"
    if name == "auto":
        env = os.environ.get(ENV_VAR, "").strip().lower()
        if env:
            name, source = env, f"environment variable {ENV_VAR}"
    if name not in BACKENDS:
        raise ModelError(
            f"unknown selective-scan backend '{backend if source == 'backend argument' else name}' "
            f"(from the {source}); expected one of {', '.join(BACKENDS)}"
        )
    is_cuda = device is not None and torch.device(device).type == "cuda"
    if name == "auto":
        if is_cuda:
            return "mamba_ssm" if mamba_ssm_available() else "reference"
        return "cpu"
    if name == "mamba_ssm":
        if not mamba_ssm_available():
            raise ModelError(
                f"selective-scan backend 'mamba_ssm' requested (from the {source}) but the "
                "mamba_ssm package does not import; install it (pip install 'geolesf[cuda]') "
                "or use backend 'cpu'"
            )
        if not is_cuda:
            raise ModelError(
                f"selective-scan backend 'mamba_ssm' requested (from the {source}) but the "
                "tensors are not on a CUDA device; use backend 'cpu' or 'auto'"
            )
    return name


def selective_scan(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False, backend="auto"):
    """Selective scan with the ``mamba_ssm.selective_scan_fn`` contract.

    The contract and the backends are described in :mod:`geolesf.ops.selective_scan`.

    ``backend`` is ``"auto"`` (default), ``"cpu"``, ``"reference"``, ``"mamba_ssm"`` or ``"unrolled"``;
    with ``"auto"`` the environment variable ``GEOLESF_SCAN_BACKEND`` may name another.
    """
    name = resolve_backend(backend, u.device)
    if name == "cpu":
        return selective_scan_cpu(u, delta, A, B, C, D, delta_bias, delta_softplus)
    if name == "reference":
        return selective_scan_reference(u, delta, A, B, C, D, delta_bias, delta_softplus)
    if name == "unrolled":
        return selective_scan_unrolled(u, delta, A, B, C, D, delta_bias, delta_softplus)
    return _selective_scan_mamba_ssm(u, delta, A, B, C, D, delta_bias, delta_softplus)
