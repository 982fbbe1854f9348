"""Batch buffers, memory layout and heap settings of the dense tile runner.

Three things keep the dense forward of :class:`geolesf.predict.rowloop.TileRunner` fast and its
peak memory the same on every scene and in every run:

* :class:`BatchBuffers` — the batch input ``(B, bands, H, W)`` and the batch output ``(B, C, h, w)``
  are two numpy arrays allocated on the first batch and reused for every later batch (no per-batch
  ``np.stack`` / output allocation). The outputs the runner returns are views of the output buffer:
  its callers consume them before the next batch.
* channels-last input (:func:`use_channels_last`) — on CPU, oneDNN convolutions run on ``NHWC``
  tensors without reordering each layer's input; for ``smp.Unet(resnet18)`` at batch 8 of 512² tiles
  on this project's 2-core machine this made the forward ~1.5× faster (``benchmarks/bench_predict_peer.py``).
  Only the *input* is laid out channels-last (the input buffer is ``NHWC`` and the tensor a permuted
  view of it): the user's module is never modified. The float result differs from the ``NCHW``
  forward by rounding only (~1e-6 in probabilities); ``memory_format="contiguous"`` gives the bytes
  of the ``NCHW`` path exactly.
* :func:`pin_mmap_threshold` — glibc raises its mmap threshold dynamically (up to 32 MiB) each time a
  mmapped block is freed, so the mid-sized activation tensors of later batches land in the heap,
  where they fragment it and the peak RSS of identical runs differed by up to ~100 MB. Pinning the
  threshold (``mallopt(M_MMAP_THRESHOLD)``, which also switches the dynamic adjustment off) makes
  every block at least that large a private mapping that goes back to the OS when freed, so the
  peak is the live memory of one batch. It is process-wide (glibc has no per-call setting) and is
  applied by the predictors, on glibc only. Per-pixel (patch) models want the opposite setting:
  S²Mamba's batch of 1,024 patches has activations of 25–100 MB, above the 32 MiB ceiling of the
  dynamic threshold, so with it (or with a 4 MiB pin) every batch maps and unmaps them and the kernel
  zero-fills their pages again — about a third of the CPU time of whole-scene prediction was page
  faults and ``brk`` trims. :data:`PIXEL_MMAP_THRESHOLD` (256 MiB) keeps them in the heap, where the
  next batch reuses the same memory (whole-scene S²Mamba: about 1.4× the pixels per CPU-second, for
  a peak about 0.2 GB higher; ``benchmarks/bench_s2mamba.py``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import Any

import numpy as np

MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
DEFAULT_MMAP_THRESHOLD = 4 << 20
"""The dense tile runner's threshold: every block of 4 MiB or more is a private mapping."""
PIXEL_MMAP_THRESHOLD = 256 << 20
"""Per-pixel (patch) models' threshold: a batch's activations stay in the heap and are reused."""
_pinned: list[int] = []


def use_channels_last(module: Any, device: str, memory_format: str) -> bool:
    """Whether the batch input is laid out channels-last: ``auto`` → on CPU, for an ``nn.Module``
    holding a 2-D convolution (any other callable, e.g. an ONNX Runtime wrapper, gets ``NCHW``)."""
    if memory_format != "auto":
        return memory_format == "channels_last"
    import torch
    from torch import nn

    if torch.device(device).type != "cpu" or not isinstance(module, nn.Module):
        return False
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


class BatchBuffers:
    """A reused input buffer (``NCHW``, or ``NHWC`` when ``channels_last``) and output buffer."""

    def __init__(self, ph: int, pw: int, th: int, tw: int, channels_last: bool) -> None:
        self.ph, self.pw, self.th, self.tw, self.channels_last = ph, pw, th, tw, channels_last
        self._in: np.ndarray | None = None
        self._out: np.ndarray | None = None

    def inputs(self, tiles: list[np.ndarray]) -> Any:
        """The batch tensor ``(n, bands, ph, pw)`` over the input buffer, tiles copied in (and padded
        symmetrically to ``ph × pw`` at the bottom and right when the model needs a size divisor)."""
        import torch

        n, bands = len(tiles), tiles[0].shape[0]
        shape = (self.ph, self.pw, bands) if self.channels_last else (bands, self.ph, self.pw)
        if self._in is None or self._in.shape[0] < n or self._in.shape[1:] != shape:
            self._in = np.empty((n, *shape), dtype=np.float32)
        for k, a in enumerate(tiles):
            dst = self._in[k].transpose(2, 0, 1) if self.channels_last else self._in[k]
            h, w = a.shape[1:]
            if h == self.ph and w == self.pw:
                dst[...] = a
            else:
                dst[...] = np.pad(a, ((0, 0), (0, self.ph - h), (0, self.pw - w)), mode="symmetric")
        x = torch.from_numpy(self._in[:n])
        return x.permute(0, 3, 1, 2) if self.channels_last else x

    def outputs(self, y: Any) -> np.ndarray:
        """``y`` ``(n, C, ≥th, ≥tw)`` (any device, layout, float dtype) cropped to ``th × tw`` and copied
        into the output buffer; a float32 ``(n, C, th, tw)`` view of it is returned."""
        import torch

        n, c = int(y.shape[0]), int(y.shape[1])
        if self._out is None or self._out.shape[0] < n or self._out.shape[1] != c:
            self._out = np.empty((n, c, self.th, self.tw), dtype=np.float32)
        out = self._out[:n]
        torch.from_numpy(out).copy_(y[:, :, : self.th, : self.tw])
        return out


def pin_mmap_threshold(nbytes: int | None = None, *, kind: str = "dense") -> bool:
    """Pin glibc's mmap threshold (and a trim threshold of twice that); False where the C library is
    not glibc or when switched off. See the module docstring for why.

    ``nbytes`` defaults to the environment variable ``GEOLESF_MMAP_THRESHOLD`` (bytes; ``0`` leaves
    glibc's own dynamic threshold alone), else :data:`PIXEL_MMAP_THRESHOLD` for ``kind="pixel"``
    (per-pixel patch models; a :class:`~geolesf.predict.model.PredictModel`'s ``kind`` can be passed as
    is) and :data:`DEFAULT_MMAP_THRESHOLD` for every other kind (tiled dense models).
    A process that runs both kinds gets the setting of the latest call.
    """
    if nbytes is None:
        env = os.environ.get("GEOLESF_MMAP_THRESHOLD", "").strip()
        nbytes = int(env) if env.isdigit() else (PIXEL_MMAP_THRESHOLD if kind == "pixel" else DEFAULT_MMAP_THRESHOLD)
    if nbytes <= 0:
        return bool(_pinned)
    if _pinned and _pinned[-1] == nbytes:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if not (mallopt(_M_MMAP_THRESHOLD, int(nbytes)) and mallopt(_M_TRIM_THRESHOLD, 2 * int(nbytes))):
        return False
    _pinned[:] = [int(nbytes)]
    return True
