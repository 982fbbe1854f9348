"""Selective scan (the S6 recurrence of Mamba) with interchangeable backends.

The public function :func:`selective_scan` follows the tensor contract of
``mamba_ssm.ops.selective_scan_interface.selective_scan_fn`` (grouped, input-dependent
``B`` and ``C``)::

    u, delta   : (batch, K*D, L)
    A          : (K*D, N)            (negative for a stable scan; not required)
    B, C       : (batch, K, N, L)    channel d uses group k = d // D;
                 (batch, N, L) is accepted as K = 1
    D          : (K*D,) or None
    delta_bias : (K*D,) or None
    returns    : (batch, K*D, L), float32 (float64 if any input is float64)

For each channel d, state n and step t::

    dt[d,t]  = softplus(delta[d,t] + delta_bias[d])     (softplus only if delta_softplus)
    h[d,t,n] = exp(dt[d,t] * A[d,n]) * h[d,t-1,n] + dt[d,t] * B[k(d),n,t] * u[d,t],  h[-1] = 0
    y[d,t]   = sum_n C[k(d),n,t] * h[d,t,n] + D[d] * u[d,t]

Backends
--------
``reference`` (``reference.py``)
    The recurrence written out: a Python loop over L, vectorised over batch, channels
    and N, differentiated by autograd. Slow and memory hungry; it is the definition.
``cpu`` (``cpu.py``)
    Fast forward and backward with hand-written gradients (reverse-time adjoint
    recurrence; nothing of size batch*K*D*L*N is kept between forward and backward).
    Two implementations, same contract:

    * native (``native.py``, used for CPU tensors when possible): a small C kernel
      (``scan_kernel.c`` and the ``scan_kernel_*.h`` it includes, shipped with the
      package) compiled on first use with the system C compiler (about a second, cached in
      ``$GEOLESF_KERNEL_CACHE`` or a private folder in the temp directory, rebuilt when the
      C source changes), loaded with ctypes, run over batch ranges on
      ``torch.get_num_threads()`` threads. Softplus, the recurrence, the adjoint and the
      reductions for A, D and delta_bias are fused in L1-sized scratch, with a vectorised
      exp2. The forward (``scan_kernel_infer.h``) runs 8 channels of a group at once (16 in
      the ``-march=native`` build on AVX-512 CPUs) with their N states as lane vectors (no
      horizontal sums; B and C read through strides, so no layout copy); when no gradient is
      needed (``torch.no_grad`` / ``torch.inference_mode``, or no input requires grad) it is
      called directly, without the autograd Function. The backward (``scan_kernel_grad.h``)
      uses the same channel blocks. In the AVX-512 build, float32 with N = 16 runs the
      intrinsics kernels of ``scan_kernel_avx512.h`` / ``scan_kernel_avx512_rows.h``: states
      and adjoints in registers, rows and lanes exchanged by in-register 16×16 transposes, and
      a group's channels beyond the last whole 16-channel block run as item-lane blocks (one
      channel of 16 batch items per block, each lane with its own B and C), so no lane idles at
      S²Mamba's 49-channel spectral groups. Denormals are flushed to zero during a kernel call.
      The batch is split into parts that run on PyTorch's own OpenMP team (``GOMP_parallel`` of
      the runtime PyTorch loaded; a Python thread pool where none is found), so no second set of
      threads competes with the one PyTorch's last op left spinning.
      ``GEOLESF_SCAN_NATIVE=0`` disables it;
    * torch (``torch_scan.py``, fallback without a compiler, and on GPUs): a
      ``torch.autograd.Function`` that processes the batch in chunks (bounded memory), lays
      each chunk out time-major so every recurrence step is one in-place ``addcmul_`` over a
      contiguous slab, and contracts over N/D with batched vector-matrix products.
    A third entry point, :func:`geolesf.ops.selective_scan.fused.multi_scan` (``fused.py``,
    ``scan_kernel_fused.h``), runs several scan directions over one input in one native call
    (the directions are index tables; the dt projection and the merge of the directions are
    folded in), differentiable; S²Mamba's CPU forward uses it.
``unrolled`` (``unrolled.py``)
    The recurrence laid out for ``torch.onnx.export``: time-major inputs, groups broadcast, one
    batched product per step; the ONNX export of S²Mamba traces it (``geolesf export-model``).
``mamba_ssm`` (``mamba.py``)
    The official CUDA kernel (``mamba_ssm`` package); CUDA tensors only.
``auto``
    CUDA tensors: ``mamba_ssm`` when it imports, else ``reference`` (on a GPU the
    ``reference`` loop is 4–10× faster than the ``cpu`` backend's torch path, measured on an
    H200: ``benchmarks/results/gpu.json``). Other tensors: ``cpu``.

Backend selection (``dispatch.py``): ``backend="auto"`` can be overridden with the
environment variable ``GEOLESF_SCAN_BACKEND`` (one of the names above); an explicit non-auto
argument wins over the variable. An unknown name raises :class:`geolesf.errors.ModelError`.
The input shape checks shared by all backends are in ``contract.py``.
"""

from __future__ import annotations

from geolesf.ops.selective_scan.cpu import selective_scan_cpu
from geolesf.ops.selective_scan.dispatch import (
    BACKENDS,
    ENV_VAR,
    resolve_backend,
    selective_scan,
)
from geolesf.ops.selective_scan.mamba import mamba_ssm_available
from geolesf.ops.selective_scan.native import (
    KERNEL_CACHE_ENV_VAR,
    NATIVE_ENV_VAR,
    native_kernel_available,
)
from geolesf.ops.selective_scan.reference import selective_scan_reference

__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "KERNEL_CACHE_ENV_VAR",
    "NATIVE_ENV_VAR",
    "mamba_ssm_available",
    "native_kernel_available",
    "resolve_backend",
    "selective_scan",
    "selective_scan_cpu",
    "selective_scan_reference",
]
