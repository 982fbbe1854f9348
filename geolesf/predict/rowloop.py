"""The tile-row step shared by the streaming predictor and its distributed parts.

A scene is covered by a grid of overlapping tiles (:func:`geolesf.predict.blend.tile_starts`).
Tile row ``i`` owns the *band* of output rows ``[rows[i], rows[i+1])``. :class:`TileRowLoop` runs
one tile row: it reads each tile (with a halo for patch models), runs the model on batches of
tiles, multiplies each output by its blending window (zero on nodata pixels), sums the tiles left
to right into a float32 accumulator, adds the *carry* (what earlier tile rows overlapped into this
band), finishes the band's rows into class ids (and probabilities), and hands on the rows that the
next tile row still adds to. :func:`geolesf.predict.tiled.predict_raster` calls it once per tile row
with buffers it allocates once; :mod:`geolesf.predict.parts` calls it for a range of tile rows.
Because both run this one code path, their outputs are the same bytes.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from geolesf.predict import blend as _blend
from geolesf.predict.batching import BatchBuffers, use_channels_last
from geolesf.predict.patches import PAD_MODES, PatchGatherer

if TYPE_CHECKING:
    from geolesf.predict.model import PredictModel


def tile_batches(n: int, batch: int) -> list[list[int]]:
    """``range(n)`` in consecutive chunks of ``batch`` and a remainder (9 tiles, batch 8 → 8 + 1).

    Full batches first: ``--batch-size`` is then both the largest batch the model sees and the one
    it sees on any scene at least that many tiles wide, so peak memory is the same for a small and
    a large scene (equal-sized chunks, 5 + 4 here, made small scenes peak lower than wide ones).
    """
    return [list(range(a, min(a + batch, n))) for a in range(0, n, batch)]


class TileRunner:
    """Reads one tile's input and runs the model on a batch of tiles.

    Dense batches go through reused buffers (:class:`geolesf.predict.batching.BatchBuffers`): the
    arrays :meth:`run_dense` returns are views that the next call overwrites.
    """

    def __init__(self, pm: PredictModel, src: Any, th: int, tw: int, device: str, softmax: bool,
                 pixel_batch: int, memory_format: str = "auto") -> None:
        self.pm, self.src, self.th, self.tw = pm, src, th, tw
        self.device, self.softmax, self.pixel_batch = torch.device(device), softmax, pixel_batch
        self.halo = pm.patch_size // 2 if pm.kind == "pixel" else 0
        d = max(1, pm.size_divisor)
        self.ph, self.pw = -(-th // d) * d, -(-tw // d) * d
        self.forward_seconds = 0.0
        self.channels_last = pm.kind == "dense" and use_channels_last(pm.module, device, memory_format)
        self.buffers = BatchBuffers(self.ph, self.pw, th, tw, self.channels_last)
        self._patches: torch.Tensor | None = None

    def read(self, y: int, x: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
        """Model input for tile ``(y, x)``, its validity ``(th, tw)`` and the halo sides added."""
        r, src = self.halo, self.src
        r0, r1 = max(0, y - r), min(src.height, y + self.th + r)
        c0, c1 = max(0, x - r), min(src.width, x + self.tw + r)
        data, valid = src.read(r0, r1, c0, c1)
        pads = (r - (y - r0), r - (r1 - y - self.th), r - (x - c0), r - (c1 - x - self.tw))
        core = valid[y - r0:y - r0 + self.th, x - c0:x - c0 + self.tw]
        return data, core, pads

    def prepare(self, data: np.ndarray, valid_full: np.ndarray | None) -> np.ndarray:
        x = self.pm.normalise(data) if self.pm.normalise is not None else data.astype(np.float32)
        if valid_full is not None:
            x[:, ~valid_full] = 0.0
        return x

    def run_dense(self, inputs: list[np.ndarray]) -> np.ndarray:
        """``(n, C, th, tw)`` float32 outputs of the tiles ``inputs`` (a view of the reused output buffer)."""
        x = self.buffers.inputs(inputs).to(self.device)
        start = time.perf_counter()
        with torch.inference_mode():
            y = self.pm.module(x)
            if self.softmax:
                y = y.softmax(1)
            out = self.buffers.outputs(y)
        self.forward_seconds += time.perf_counter() - start
        return out

    def run_pixel(self, x: np.ndarray, pads: tuple[int, int, int, int], valid: np.ndarray, classes: int) -> np.ndarray:
        t, b, left, right = pads
        mode = PAD_MODES.get(self.pm.padding, "symmetric")
        if any(pads):
            x = np.pad(x, ((0, 0), (t, b), (left, right)), mode=mode)
        gather = PatchGatherer(x.transpose(1, 2, 0), self.pm.patch_size, self.pm.padding)
        rows, cols = np.nonzero(valid)
        rows_t = torch.from_numpy(rows + self.halo)
        cols_t = torch.from_numpy(cols + self.halo)
        out = np.zeros((classes, self.th, self.tw), dtype=np.float32)
        n = min(self.pixel_batch, len(rows))
        if self._patches is None or self._patches.shape[0] < n or self._patches.shape[1:] != gather.buffer(0).shape[1:]:
            self._patches = gather.buffer(n)  # reused by the later batches and tiles
        start = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(rows), self.pixel_batch):
                k = min(self.pixel_batch, len(rows) - i)
                patches = gather(rows_t[i:i + k], cols_t[i:i + k], out=self._patches[:k]).to(self.device)
                y = self.pm.module(patches)
                if self.softmax:
                    y = y.softmax(1)
                out[:, rows[i:i + self.pixel_batch], cols[i:i + self.pixel_batch]] = y.float().cpu().numpy().T
        self.forward_seconds += time.perf_counter() - start
        return out


@dataclass(frozen=True)
class RowPlan:
    """The tiling of one scene and the output encoding: everything a tile row needs besides the model."""

    height: int
    width: int
    tile: int
    overlap: int
    blend: str
    margin: int
    batch_size: int
    blend_on: str
    want_probs: bool
    prob_u8: bool
    out_dtype: str
    nodata_out: int
    nodata: float | None
    device: str
    pixel_batch: int
    block: int
    memory_format: str = "auto"
    rows: tuple[int, ...] = field(init=False)
    cols: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", tuple(_blend.tile_starts(self.height, self.tile, self.overlap)))
        object.__setattr__(self, "cols", tuple(_blend.tile_starts(self.width, self.tile, self.overlap)))

    @property
    def th(self) -> int:
        return min(self.tile, self.height)

    @property
    def tw(self) -> int:
        return min(self.tile, self.width)

    def band_end(self, i: int) -> int:
        return self.rows[i + 1] if i + 1 < len(self.rows) else self.height

    def carry_rows(self, i: int) -> int:
        """Rows tile row ``i`` hands on to tile row ``i + 1`` (none after the last)."""
        return 0 if i + 1 == len(self.rows) else self.th - (self.band_end(i) - self.rows[i])

    def tile_rows_for(self, row0: int, row1: int) -> tuple[int, int, int]:
        """``(s, a, b)``: compute tile rows ``s..b-1``; bands ``a..b-1`` hold the output rows.

        ``a`` is the tile row whose band holds ``row0``, ``b - 1`` the one holding ``row1 - 1``,
        and ``s`` the first tile row whose tiles reach row ``rows[a]`` (its carry is complete for
        every row from ``rows[a]`` on, because tile rows before ``s`` end above it).
        """
        a = bisect.bisect_right(self.rows, row0) - 1
        b = bisect.bisect_left(self.rows, row1)
        s = a
        while s > 0 and self.rows[s - 1] + self.th > self.rows[a]:
            s -= 1
        return s, a, b

    @property
    def prob_dtype(self) -> Any:
        return np.uint8 if self.prob_u8 else np.float32


class TileRowLoop:
    """One tile row per call: blended accumulation, finished band rows, carry for the next row."""

    def __init__(self, src: Any, pm: PredictModel, plan: RowPlan) -> None:
        self.src, self.pm, self.plan = src, pm, plan
        self.C = len(pm.class_ids)
        self.lut = np.asarray(pm.class_ids, dtype=plan.out_dtype)
        self.runner = TileRunner(pm, src, plan.th, plan.tw, plan.device, plan.blend_on == "probabilities",
                                 plan.pixel_batch, plan.memory_format)
        self.windows = _blend.WindowCache(plan.overlap, plan.blend, plan.margin)
        self.tiles_skipped = 0
        self.read_seconds = 0.0

    def finish(self, acc: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Finished accumulators ``(C+1, h, k)`` → class ids ``(h, k)`` and probabilities."""
        C, plan = self.C, self.plan
        wsum = acc[C]
        valid = wsum > 0
        ids = self.lut[acc[:C].argmax(0)]
        ids[~valid] = plan.nodata_out
        probs = None
        if plan.want_probs:
            with np.errstate(invalid="ignore", divide="ignore"):
                p = acc[:C] / wsum
            if plan.blend_on != "probabilities":
                p = torch.from_numpy(p).softmax(0).numpy()
            if plan.prob_u8:
                probs = np.where(valid, np.rint(np.nan_to_num(p) * 254), 255).astype(np.uint8)
            else:
                probs = np.where(valid, p, np.nan).astype(np.float32)
        return ids, probs

    def __call__(self, i: int, carry: np.ndarray, band_ids: np.ndarray, band_probs: np.ndarray | None,
                 new_carry: np.ndarray, on_tile: Callable[[], None] | None = None) -> None:
        """Run tile row ``i``.

        ``carry`` ``(C+1, h, W)``: accumulators of the band's first ``h`` rows from earlier tile
        rows. Fills ``band_ids`` ``(g, W)``, ``band_probs`` ``(C, g, W)`` (or None) with the band's
        finished rows and ``new_carry`` ``(C+1, h', W)`` with the next band's first ``h'`` rows.
        ``new_carry`` may share memory with ``carry``: each tile column reads its carry columns before
        it writes the next band's into them.
        """
        plan, pm, runner, C = self.plan, self.pm, self.runner, self.C
        rows, cols, th, tw, W = plan.rows, plan.cols, plan.th, plan.tw, plan.width
        y = rows[i]
        g = plan.band_end(i) - y
        hc, new_hc = carry.shape[1], new_carry.shape[1]
        local = np.zeros((C + 1, th, tw), dtype=np.float32)
        top, bottom = i > 0, i + 1 < len(rows)
        for chunk in tile_batches(len(cols), plan.batch_size if pm.kind == "dense" else 1):
            outputs: dict[int, np.ndarray] = {}
            valids: dict[int, np.ndarray] = {}
            inputs: list[np.ndarray] = []
            run_j: list[int] = []
            for j in chunk:
                t0 = time.perf_counter()
                data, valid, pads = runner.read(y, cols[j])
                self.read_seconds += time.perf_counter() - t0
                valids[j] = valid
                if not valid.any():
                    continue
                if pm.kind == "dense":
                    inputs.append(runner.prepare(data, valid))
                    run_j.append(j)
                else:
                    outputs[j] = runner.run_pixel(runner.prepare(data, None), pads, valid, C)
            if inputs:
                for j, y_out in zip(run_j, runner.run_dense(inputs)):
                    outputs[j] = y_out
            for j in chunk:
                x = cols[j]
                x_next = cols[j + 1] if j + 1 < len(cols) else W
                if j in outputs:
                    wt = self.windows(th, tw, top, bottom, j > 0, j + 1 < len(cols)) * valids[j]
                    y_out = outputs[j]
                    y_out *= wt
                    local[:C] += y_out
                    local[C] += wt
                else:
                    self.tiles_skipped += 1
                k = x_next - x
                acc = local[:, :, :k]
                if hc:
                    acc[:, :hc] += carry[:, :, x:x_next]
                ids, probs = self.finish(acc[:, :g])
                band_ids[:, x:x_next] = ids
                if band_probs is not None:
                    band_probs[:, :, x:x_next] = probs
                if new_hc:
                    new_carry[:, :, x:x_next] = acc[:, g:g + new_hc]
                local[:, :, : tw - k] = local[:, :, k:]
                local[:, :, tw - k:] = 0.0
                if on_tile is not None:
                    on_tile()
