"""Per-pixel patch prediction: ``P×P`` neighbourhoods gathered from a padded cube, classified in batches.

Used by every predictor of ``pixel`` models (S²Mamba): the whole-cube path, the tiled row loop
and training-time evaluation. Nothing here knows which model runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from geolesf.errors import ModelError

PAD_MODES = {"symmetric": "symmetric", "reflect": "reflect", "zero": "constant"}


class PatchGatherer:
    """Pixel-centred ``P×P`` patches gathered in batches from a padded cube.

    The cube is padded once (``symmetric`` = numpy's edge-repeating mirror used by the
    official S²Mamba code, ``reflect`` or ``zero``) and kept as one ``(bands, H+2p, W+2p)``
    float32 tensor. Over it lies a strided view with one ``(bands, P, P)`` window per padded-cube
    position (window ``y·(W+2p) + x`` starts at row ``y``, column ``x``), so a batch of patches is a
    single ``index_select`` of windows: one copy, straight into the ``(n, bands, P, P)`` batch,
    optionally a reused buffer (``out``). (The gather this replaced indexed ``(bands, n, P, P)`` and
    then copied it again to make it ``(n, bands, P, P)``: the same values, with one copy more.)
    """

    def __init__(self, cube: np.ndarray, patch_size: int, padding: str = "symmetric") -> None:
        if patch_size % 2 != 1 or patch_size < 1:
            raise ModelError(f"patch size must be odd and positive, found {patch_size}")
        modes = PAD_MODES
        if padding not in modes:
            raise ModelError(f"padding must be one of {', '.join(modes)}, found '{padding}'")
        self.patch_size = patch_size
        self.radius = patch_size // 2
        r, p = self.radius, patch_size
        padded = np.pad(np.asarray(cube, dtype=np.float32), ((r, r), (r, r), (0, 0)), mode=modes[padding])
        self.padded = torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1)))
        bands, hp, wp = self.padded.shape
        # windows whose start is a valid patch corner; the last one ends exactly at the tensor's end
        starts = max(0, (hp - p) * wp + (wp - p + 1))
        self.windows = self.padded.as_strided((starts, bands, p, p), (1, hp * wp, wp, 1))
        self.row_stride = wp

    def __call__(self, rows: torch.Tensor, cols: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Patches centred on ``(rows, cols)`` (original image coordinates): ``(n, bands, P, P)``,
        written into ``out`` when given (a contiguous float32 tensor of that shape)."""
        index = torch.as_tensor(rows, dtype=torch.long) * self.row_stride + torch.as_tensor(cols, dtype=torch.long)
        if out is None:
            return torch.index_select(self.windows, 0, index)
        return torch.index_select(self.windows, 0, index, out=out)

    def buffer(self, n: int) -> torch.Tensor:
        """An uninitialised ``(n, bands, P, P)`` float32 tensor for ``out``."""
        return torch.empty((n, self.padded.shape[0], self.patch_size, self.patch_size), dtype=torch.float32)


@torch.no_grad()
def predict_pixels(
    model: nn.Module,
    gather: PatchGatherer,
    rows: np.ndarray,
    cols: np.ndarray,
    batch_size: int = 1024,
    progress: bool = True,
    desc: str = "predict",
) -> np.ndarray:
    """Class index (0-based) for each pixel, batched, with a tqdm progress bar in pixels."""
    from tqdm.auto import tqdm

    from geolesf.predict.batching import pin_mmap_threshold

    pin_mmap_threshold(kind="pixel")  # the batch activations stay in the heap (geolesf.predict.batching)
    model.eval()
    rows_t = torch.as_tensor(rows, dtype=torch.long)
    cols_t = torch.as_tensor(cols, dtype=torch.long)
    device = next(model.parameters()).device
    out = np.empty(len(rows_t), dtype=np.int64)
    buf = gather.buffer(min(batch_size, len(rows_t)))  # one batch of patches, reused for every batch
    with tqdm(total=len(rows_t), unit="px", desc=desc, disable=not progress, leave=False) as bar:
        for start in range(0, len(rows_t), batch_size):
            stop = min(start + batch_size, len(rows_t))
            patches = gather(rows_t[start:stop], cols_t[start:stop], out=buf[: stop - start]).to(device)
            out[start:stop] = model(patches).argmax(1).cpu().numpy()
            bar.update(stop - start)
    return out


def predict_scene(model: nn.Module, cube: np.ndarray, patch_size: int, padding: str, **kwargs: Any) -> np.ndarray:
    """Classify every pixel of a normalised ``(H, W, bands)`` cube: ``(H, W)`` 0-based class indices."""
    h, w = cube.shape[:2]
    gather = PatchGatherer(cube, patch_size, padding)
    rows, cols = np.divmod(np.arange(h * w), w)
    return predict_pixels(model, gather, rows, cols, **kwargs).reshape(h, w)
