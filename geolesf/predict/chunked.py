"""Chunk-by-chunk prediction of an in-memory or dask array, equal to the file-based tiled predictor.

:func:`predict_array` is the engine behind ``DataArray.geolesf.predict``. It computes exactly what
:func:`geolesf.predict.tiled.predict_raster` writes for the same scene, model and settings, but one
output chunk at a time and lazily when the input is dask-backed:

* **Dense models.** The tile grid is the predictor's *global* grid
  (:func:`geolesf.predict.blend.tile_starts` over the whole scene), never a per-chunk grid. An
  output chunk runs every global tile that intersects it, reading the input with a halo (the
  union of those tiles, at most ``tile - 1`` pixels past the chunk), and blends them with the same
  windows, validity weights and accumulation order as the file-based predictor (the tiles of one
  tile row are summed left to right, then added to the rows above). Every output pixel therefore
  receives the same contributions in the same order; the only difference is that a tile straddling
  a chunk border runs once per chunk that needs it.
* **Per-pixel patch models** (S²Mamba): a pixel depends only on its ``P×P`` neighbourhood, so a
  chunk is read with a halo of ``P // 2`` pixels and padded at the scene border with the model's
  padding mode, exactly like a tile of the file-based predictor.

This is ``map_overlap`` semantics with a depth large enough to cover the global tiles, implemented
as one dask task per output chunk over a haloed slice of the input (``map_blocks`` with halos), so
the input's chunking is free: chunks may be smaller than the tile, the halo or irregular.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from geolesf.predict import blend as _blend
from geolesf.predict.options import TilingOptions, check_inputs, output_dtype


@dataclass
class ChunkPlan:
    """Everything a chunk task needs; built once per :func:`predict_array` call."""

    pm: Any
    height: int
    width: int
    th: int
    tw: int
    rows: list[int]
    cols: list[int]
    windows: _blend.WindowCache
    lut: np.ndarray
    nodata_out: int
    nodata_in: float | None
    softmax: bool
    probabilities: bool
    batch_size: int
    pixel_batch: int
    device: str
    name: str = "array"
    warn_nonfinite: bool = True

    @property
    def n_classes(self) -> int:
        return len(self.pm.class_ids)

    def input_bounds(self, r0: int, r1: int, c0: int, c1: int) -> tuple[int, int, int, int]:
        """Input rows/cols ``[er0, er1) × [ec0, ec1)`` that output chunk ``[r0, r1) × [c0, c1)`` reads."""
        if self.pm.kind == "pixel":
            h = self.pm.patch_size // 2
            return max(0, r0 - h), min(self.height, r1 + h), max(0, c0 - h), min(self.width, c1 + h)
        ys = [y for y in self.rows if y < r1 and y + self.th > r0]
        xs = [x for x in self.cols if x < c1 and x + self.tw > c0]
        return min(ys), max(ys) + self.th, min(xs), max(xs) + self.tw


def _valid(data: np.ndarray, nodata: float | None, name: str = "array", warn: bool = True
           ) -> tuple[np.ndarray, np.ndarray]:
    """``(data, valid)`` as the file-based predictor reads them: NaN/±Inf pixels are nodata, their values 0."""
    from geolesf.predict.sources import ArraySource

    src = ArraySource(data, nodata)
    src.name = name
    if not warn:
        src._warned = [True]
    return src.read(0, data.shape[1], 0, data.shape[2])


def _runner(plan: ChunkPlan, th: int, tw: int) -> Any:
    from geolesf.predict.rowloop import TileRunner

    return TileRunner(plan.pm, None, th, tw, plan.device, plan.softmax, plan.pixel_batch)


def _finish(plan: ChunkPlan, acc: np.ndarray) -> np.ndarray:
    """Accumulators ``(C+1, h, w)`` → class ids ``(h, w)`` or probabilities ``(C, h, w)``.

    The same arithmetic as the file-based predictor's ``finish_rows``.
    """
    import torch

    C = plan.n_classes
    wsum = acc[C]
    valid = wsum > 0
    if not plan.probabilities:
        ids = plan.lut[acc[:C].argmax(0)]
        ids[~valid] = plan.nodata_out
        return ids
    with np.errstate(invalid="ignore", divide="ignore"):
        p = acc[:C] / wsum
    if not plan.softmax:
        p = torch.from_numpy(p).softmax(0).numpy()
    return np.where(valid, p, np.nan).astype(np.float32)


def _dense_chunk(plan: ChunkPlan, data: np.ndarray, er0: int, ec0: int, r0: int, r1: int, c0: int, c1: int,
                 tick: Callable[[int], None] | None) -> np.ndarray:
    C, th, tw = plan.n_classes, plan.th, plan.tw
    runner = _runner(plan, th, tw)
    data, valid_all = _valid(data, plan.nodata_in, plan.name, plan.warn_nonfinite)
    h, w = r1 - r0, c1 - c0
    total = np.zeros((C + 1, h, w), dtype=np.float32)
    nrow, ncol = len(plan.rows), len(plan.cols)
    row_idx = [i for i, y in enumerate(plan.rows) if y < r1 and y + th > r0]
    col_idx = [j for j, x in enumerate(plan.cols) if x < c1 and x + tw > c0]
    for i in row_idx:
        y = plan.rows[i]
        local = np.zeros_like(total)
        for start in range(0, len(col_idx), plan.batch_size):
            batch = col_idx[start:start + plan.batch_size]
            inputs, run, valids = [], [], {}
            for j in batch:
                x = plan.cols[j]
                tile = data[:, y - er0:y - er0 + th, x - ec0:x - ec0 + tw]
                valid = valid_all[y - er0:y - er0 + th, x - ec0:x - ec0 + tw]
                valids[j] = valid
                if valid.any():
                    inputs.append(runner.prepare(tile, valid))
                    run.append(j)
            outputs = dict(zip(run, runner.run_dense(inputs))) if inputs else {}
            for j in batch:
                if j in outputs:
                    x = plan.cols[j]
                    wt = plan.windows(th, tw, i > 0, i + 1 < nrow, j > 0, j + 1 < ncol) * valids[j]
                    y_out = outputs[j]
                    y_out *= wt
                    # the part of this tile inside the chunk
                    ty0, ty1 = max(y, r0), min(y + th, r1)
                    tx0, tx1 = max(x, c0), min(x + tw, c1)
                    sl = (slice(ty0 - r0, ty1 - r0), slice(tx0 - c0, tx1 - c0))
                    local[(slice(0, C), *sl)] += y_out[:, ty0 - y:ty1 - y, tx0 - x:tx1 - x]
                    local[(C, *sl)] += wt[ty0 - y:ty1 - y, tx0 - x:tx1 - x]
            if tick is not None:
                tick(len(batch))
        total = local + total
    return _finish(plan, total)


def _pixel_chunk(plan: ChunkPlan, data: np.ndarray, er0: int, ec0: int, r0: int, r1: int, c0: int, c1: int,
                 tick: Callable[[int], None] | None) -> np.ndarray:
    C, h, w = plan.n_classes, r1 - r0, c1 - c0
    runner = _runner(plan, h, w)
    r = runner.halo
    pads = (r - (r0 - er0), r - (er0 + data.shape[1] - r1), r - (c0 - ec0), r - (ec0 + data.shape[2] - c1))
    data, valid = _valid(data, plan.nodata_in, plan.name, plan.warn_nonfinite)
    valid = valid[r0 - er0:r1 - er0, c0 - ec0:c1 - ec0]
    acc = np.zeros((C + 1, h, w), dtype=np.float32)
    if valid.any():
        wt = plan.windows(h, w, False, False, False, False) * valid
        y_out = runner.run_pixel(runner.prepare(data, None), pads, valid, C)
        y_out *= wt
        acc[:C] += y_out
        acc[C] += wt
    if tick is not None:
        tick(1)
    return _finish(plan, acc)


def predict_chunk(plan: ChunkPlan, data: np.ndarray, er0: int, ec0: int, r0: int, r1: int, c0: int, c1: int,
                  tick: Callable[[int], None] | None = None) -> np.ndarray:
    """Output for chunk ``[r0, r1) × [c0, c1)`` from ``data``, the input read at ``(er0, ec0)``."""
    data = np.asarray(data)
    fn = _pixel_chunk if plan.pm.kind == "pixel" else _dense_chunk
    return fn(plan, data, er0, ec0, r0, r1, c0, c1, tick)


def make_plan(
    source: Any,
    pm: Any,
    *,
    tile: int,
    overlap: int,
    blend: str,
    margin: int | None,
    blend_on: str,
    batch_size: int,
    pixel_batch: int,
    out_nodata: int | None,
    device: str,
    probabilities: bool,
) -> ChunkPlan:
    """Validate settings like :func:`~geolesf.predict.tiled.predict_raster` and build the plan.

    ``source`` is a :class:`geolesf.predict.sources.ArraySource` (band count, nodata, CRS checks).
    """
    opts = TilingOptions(tile=tile, overlap=overlap, blend=blend, margin=margin, blend_on=blend_on,
                         batch_size=batch_size, pixel_batch=pixel_batch, out_nodata=out_nodata, device=device)
    check_inputs(source, pm, opts.tile)
    return plan_from_options(source, pm, opts.for_model(pm), probabilities)


def plan_from_options(source: Any, pm: Any, opts: TilingOptions, probabilities: bool) -> ChunkPlan:
    """The plan of checked options (:meth:`TilingOptions.for_model` applied) for ``source``."""
    tile, overlap, windows = opts.tile, opts.overlap, _blend.WindowCache(opts.overlap, opts.blend, opts.blend_margin)
    out_dtype, nodata_out = output_dtype(pm.class_ids, opts.out_nodata)
    H, W = source.height, source.width
    return ChunkPlan(
        pm=pm, height=H, width=W, th=min(tile, H), tw=min(tile, W), rows=_blend.tile_starts(H, tile, overlap),
        cols=_blend.tile_starts(W, tile, overlap), windows=windows,
        lut=np.asarray(pm.class_ids, dtype=out_dtype), nodata_out=nodata_out, nodata_in=source.nodata,
        softmax=opts.blend_on == "probabilities", probabilities=probabilities, batch_size=opts.batch_size,
        pixel_batch=opts.pixel_batch, device=opts.device, name=str(getattr(source, "name", "array")),
    )


def _out_meta(plan: ChunkPlan) -> tuple[np.dtype, int]:
    return (np.dtype(np.float32), plan.n_classes) if plan.probabilities else (plan.lut.dtype, 0)


def predict_dask(plan: ChunkPlan, data: Any) -> Any:
    """Lazy output for a dask ``(bands, y, x)`` array: one task per input chunk, read with its halo."""
    import dask
    import dask.array as dsa

    dtype, C = _out_meta(plan)
    ybounds = np.cumsum((0, *data.chunks[1]))
    xbounds = np.cumsum((0, *data.chunks[2]))
    token = uuid.uuid4().hex
    fn = dask.delayed(predict_chunk, pure=False)
    # one graph key holds the plan (and the model): a distributed scheduler ships it once per worker
    plan_key = dask.delayed(plan, name=f"geolesf-plan-{token}", traverse=False)
    grid = []
    for i in range(len(ybounds) - 1):
        row = []
        r0, r1 = int(ybounds[i]), int(ybounds[i + 1])
        for j in range(len(xbounds) - 1):
            c0, c1 = int(xbounds[j]), int(xbounds[j + 1])
            er0, er1, ec0, ec1 = plan.input_bounds(r0, r1, c0, c1)
            task = fn(plan_key, data[:, er0:er1, ec0:ec1], er0, ec0, r0, r1, c0, c1,
                      dask_key_name=f"geolesf-predict-{token}-{i}-{j}")
            shape = (C, r1 - r0, c1 - c0) if C else (r1 - r0, c1 - c0)
            row.append(dsa.from_delayed(task, shape=shape, dtype=dtype))
        grid.append(row)
    # nested lists: the inner level is concatenated along x (last axis), the outer along y
    return dsa.block(grid)


def predict_numpy(plan: ChunkPlan, data: np.ndarray, progress: bool = True) -> np.ndarray:
    """Eager output for an in-memory array (tqdm over tiles; over rows for patch models)."""
    from tqdm.auto import tqdm

    if plan.pm.kind == "pixel":
        return _pixel_strips(plan, data, progress)
    total = len(plan.rows) * len(plan.cols)
    with tqdm(total=total, unit="tile", desc="predict", disable=not progress, dynamic_ncols=True) as bar:
        return predict_chunk(plan, data, 0, 0, 0, plan.height, 0, plan.width, tick=bar.update)


def _pixel_strips(plan: ChunkPlan, data: np.ndarray, progress: bool) -> np.ndarray:
    """A patch model over an in-memory array in about 20 strips of rows (each read with its halo, as a
    dask chunk is), so the progress bar moves; the pixels are those of one whole-array chunk."""
    from tqdm.auto import tqdm

    step = max(1, -(-plan.height // 20))
    parts = []
    with tqdm(total=plan.height, unit="row", desc="predict", disable=not progress, dynamic_ncols=True) as bar:
        for r0 in range(0, plan.height, step):
            r1 = min(plan.height, r0 + step)
            er0, er1, ec0, ec1 = plan.input_bounds(r0, r1, 0, plan.width)
            parts.append(predict_chunk(plan, data[:, er0:er1, ec0:ec1], er0, ec0, r0, r1, 0, plan.width))
            bar.update(r1 - r0)
    return np.concatenate(parts, axis=-2)
