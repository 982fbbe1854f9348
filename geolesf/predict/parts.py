"""One block-aligned range of output rows, bit-identical to the single-process tiled predictor.

:func:`geolesf.predict.tiled.predict_raster` streams a scene tile row by tile row: each tile row
sums its blended tiles left to right into a float32 accumulator, adds the *carry* (the rows that
earlier tile rows overlapped into it) and finishes the rows that no later tile row reaches. The
carry makes the loop sequential, so a scene cannot simply be cut at tile-row boundaries.

:func:`predict_rows` computes the output rows ``[row0, row1)`` alone. It starts at the first tile
row whose tiles reach the first band it must output (``s`` below), with an empty carry, and runs
the very tile-row step the streaming run (:mod:`geolesf.predict.stream`) runs
(:class:`geolesf.predict.rowloop.TileRowLoop`: same tile grid, same batches of tiles per forward
pass, same weight windows, same ``+=`` sequence). Rows before the band containing ``row0`` miss the contributions of earlier tile rows and are discarded; every
row it returns received exactly the float32 additions it receives in the single-process run, so
the class ids and probabilities are the same bytes. The cost is recomputing the tile rows that
overlap the part's first band (usually one), which the caller keeps small by using parts several
tiles high.

Nothing here knows about dask: :mod:`geolesf.predict.distributed` runs these parts as tasks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from geolesf.errors import ConfigError
from geolesf.predict.model import PredictModel
from geolesf.predict.rowloop import RowPlan, TileRowLoop


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


def predict_rows(src: Any, pm: PredictModel, plan: RowPlan, row0: int, row1: int) -> PartOutput:
    """Output rows ``[row0, row1)`` of ``src``, equal (bytes) to those ``predict_raster`` writes."""
    if not 0 <= row0 < row1 <= plan.height:
        raise ConfigError(f"row range [{row0}, {row1}) is outside the scene's {plan.height} rows")
    started, cpu_started = time.perf_counter(), time.process_time()
    s, a, b = plan.tile_rows_for(row0, row1)
    C = len(pm.class_ids)
    loop = TileRowLoop(src, pm, plan)
    ids = np.empty((row1 - row0, plan.width), dtype=plan.out_dtype)
    probs = (np.empty((C, row1 - row0, plan.width), dtype=np.uint8 if plan.prob_u8 else np.float32)
             if plan.want_probs else None)
    carry = np.zeros((C + 1, 0, plan.width), dtype=np.float32)
    skipped_before = 0
    for i in range(s, b):
        if i == a:
            skipped_before = loop.tiles_skipped
        g = plan.band_end(i) - plan.rows[i]
        band_ids = np.empty((g, plan.width), dtype=plan.out_dtype)
        band_probs = np.empty((C, g, plan.width), dtype=plan.prob_dtype) if plan.want_probs else None
        new_carry = np.zeros((C + 1, plan.carry_rows(i), plan.width), dtype=np.float32)
        loop(i, carry, band_ids, band_probs, new_carry)
        carry = new_carry
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
