"""One block-aligned range of output rows, bit-identical to the single-process tiled predictor.

:func:`geolesf.predict.tiled.predict_raster` streams a scene tile row by tile row: each tile row
sums its blended tiles left to right into a float32 accumulator, adds the *carry* (the rows that
earlier tile rows overlapped into it) and finishes the rows that no later tile row reaches. The
carry makes the loop sequential, so a scene cannot simply be cut at tile-row boundaries.

:func:`predict_rows` computes the output rows ``[row0, row1)`` alone. It starts at the first tile
row whose tiles reach the first band it must output (``s`` below), with an empty carry, and runs
the same loop body with the same operations in the same order as ``tiled._run`` (same tile grid,
same batches of tiles per forward pass, same weight windows, same ``+=`` sequence). Rows before
the band containing ``row0`` miss the contributions of earlier tile rows and are discarded; every
row it returns received exactly the float32 additions it receives in the single-process run, so
the class ids and probabilities are the same bytes. The cost is recomputing the tile rows that
overlap the part's first band (usually one), which the caller keeps small by using parts several
tiles high.

Nothing here knows about dask: :mod:`geolesf.predict.distributed` runs these parts as tasks.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from geolesf.errors import ConfigError
from geolesf.predict import blend as _blend
from geolesf.predict.tiled import PredictModel, _chunks, _Runner


@dataclass(frozen=True)
class RowPlan:
    """The tiling of one scene and the output encoding: everything a part needs besides the model."""

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


def split_rows(height: int, block: int, part_rows: int) -> list[tuple[int, int]]:
    """``[0, height)`` cut into consecutive ranges of ``part_rows`` rows (a multiple of ``block``)."""
    if part_rows < block or part_rows % block:
        raise ConfigError(f"--part-rows must be a positive multiple of the block size {block}, found {part_rows}")
    return [(r, min(r + part_rows, height)) for r in range(0, height, part_rows)]


def default_part_rows(plan: RowPlan, classes: int, max_bytes: int = 256 * 2**20) -> int:
    """About four tile heights per part (≈ one recomputed tile row in five), block-aligned, and at
    most ``max_bytes`` of output (class ids + probabilities) per part."""
    b = plan.block
    rows = max(b, -(-4 * plan.tile // b) * b)
    per_row = plan.width * (np.dtype(plan.out_dtype).itemsize + (classes * (1 if plan.prob_u8 else 4)
                                                                 if plan.want_probs else 0))
    while rows > b and rows * per_row > max_bytes:
        rows -= b
    return rows


@dataclass
class PartOutput:
    """Rows ``[row0, row1)`` of the class map (and probabilities), with what it cost."""

    row0: int
    row1: int
    ids: np.ndarray
    probs: np.ndarray | None
    tiles: int
    """Tiles of the bands this part outputs (the single-process run's count)."""
    tiles_computed: int
    """Tiles visited, including the recomputed tile rows above the first band."""
    tiles_skipped: int
    read_seconds: float = 0.0
    forward_seconds: float = 0.0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    """CPU time of this process while computing the part (all its threads)."""
    worker: str = ""


class _Finisher:
    """``tiled._run``'s ``finish_rows``: accumulators ``(C+1, h, k)`` → class ids and probabilities."""

    def __init__(self, pm: PredictModel, plan: RowPlan) -> None:
        self.C = len(pm.class_ids)
        self.lut = np.asarray(pm.class_ids, dtype=plan.out_dtype)
        self.plan = plan
        self.softmax = plan.blend_on == "probabilities"

    def __call__(self, acc: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        C, plan = self.C, self.plan
        wsum = acc[C]
        valid = wsum > 0
        ids = self.lut[acc[:C].argmax(0)]
        ids[~valid] = plan.nodata_out
        probs = None
        if plan.want_probs:
            with np.errstate(invalid="ignore", divide="ignore"):
                p = acc[:C] / wsum
            if not self.softmax:
                p = torch.from_numpy(p).softmax(0).numpy()
            if plan.prob_u8:
                probs = np.where(valid, np.rint(np.nan_to_num(p) * 254), 255).astype(np.uint8)
            else:
                probs = np.where(valid, p, np.nan).astype(np.float32)
        return ids, probs


class _TileRowLoop:
    """The body of ``tiled._run``'s tile-row loop, one tile row per call, carry passed in and out."""

    def __init__(self, src: Any, pm: PredictModel, plan: RowPlan) -> None:
        self.src, self.pm, self.plan = src, pm, plan
        self.C = len(pm.class_ids)
        self.runner = _Runner(pm, src, plan.th, plan.tw, plan.device, plan.blend_on == "probabilities",
                              plan.pixel_batch)
        self.windows = _blend.WindowCache(plan.overlap, plan.blend, plan.margin)
        self.finish = _Finisher(pm, plan)
        self.tiles_skipped = 0
        self.read_seconds = 0.0

    def __call__(self, i: int, carry: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        plan, pm, runner, C = self.plan, self.pm, self.runner, self.C
        rows, cols, th, tw, W = plan.rows, plan.cols, plan.th, plan.tw, plan.width
        y = rows[i]
        g = plan.band_end(i) - y
        hc = carry.shape[1]
        new_carry = np.zeros((C + 1, th - g, W), dtype=np.float32)
        band_ids = np.empty((g, W), dtype=plan.out_dtype)
        band_probs = (np.empty((C, g, W), dtype=np.uint8 if plan.prob_u8 else np.float32)
                      if plan.want_probs else None)
        local = np.zeros((C + 1, th, tw), dtype=np.float32)
        top, bottom = i > 0, i + 1 < len(rows)
        for chunk in _chunks(len(cols), plan.batch_size if pm.kind == "dense" else 1):
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
                if th > g:
                    new_carry[:, :, x:x_next] = acc[:, g:]
                local[:, :, : tw - k] = local[:, :, k:]
                local[:, :, tw - k:] = 0.0
        return band_ids, band_probs, new_carry


def predict_rows(src: Any, pm: PredictModel, plan: RowPlan, row0: int, row1: int) -> PartOutput:
    """Output rows ``[row0, row1)`` of ``src``, equal (bytes) to those ``predict_raster`` writes."""
    if not 0 <= row0 < row1 <= plan.height:
        raise ConfigError(f"row range [{row0}, {row1}) is outside the scene's {plan.height} rows")
    started, cpu_started = time.perf_counter(), time.process_time()
    s, a, b = plan.tile_rows_for(row0, row1)
    C = len(pm.class_ids)
    loop = _TileRowLoop(src, pm, plan)
    ids = np.empty((row1 - row0, plan.width), dtype=plan.out_dtype)
    probs = (np.empty((C, row1 - row0, plan.width), dtype=np.uint8 if plan.prob_u8 else np.float32)
             if plan.want_probs else None)
    carry = np.zeros((C + 1, 0, plan.width), dtype=np.float32)
    skipped_before = 0
    for i in range(s, b):
        if i == a:
            skipped_before = loop.tiles_skipped
        band_ids, band_probs, carry = loop(i, carry)
        if i < a:
            continue
        y0, y1 = plan.rows[i], plan.band_end(i)
        lo, hi = max(y0, row0), min(y1, row1)
        ids[lo - row0:hi - row0] = band_ids[lo - y0:hi - y0]
        if probs is not None:
            probs[:, lo - row0:hi - row0] = band_probs[:, lo - y0:hi - y0]
    n_cols = len(plan.cols)
    return PartOutput(
        row0=row0, row1=row1, ids=ids, probs=probs, tiles=(b - a) * n_cols, tiles_computed=(b - s) * n_cols,
        tiles_skipped=loop.tiles_skipped - skipped_before, read_seconds=loop.read_seconds,
        forward_seconds=loop.runner.forward_seconds, seconds=time.perf_counter() - started,
        cpu_seconds=time.process_time() - cpu_started,
    )
