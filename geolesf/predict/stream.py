"""The streaming single-process run behind :func:`geolesf.predict.tiled.predict_raster`.

:class:`StreamingRun` runs the tile rows of one scene top to bottom with
:class:`geolesf.predict.rowloop.TileRowLoop`, keeps the finished rows in :class:`PendingRows`
until a block-aligned band can be written to the temporary GeoTIFF, saves a resume state every
``checkpoint_every`` seconds (after a write) and at the end turns the temporary file into the
Cloud-Optimized GeoTIFF (:mod:`geolesf.predict.output`). A resumed run restores the carry, the
pending rows and the counters and writes the same bytes an uninterrupted run would.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.errors import DataError
from geolesf.io import cog as _cog
from geolesf.predict import resume as _resume
from geolesf.predict.model import PredictModel
from geolesf.predict.output import finalize_cogs, open_temps, write_style
from geolesf.predict.rowloop import RowPlan, TileRowLoop


@dataclass
class TiledResult:
    out: Path
    probabilities: Path | None
    height: int
    width: int
    tiles: int
    tiles_run: int
    tiles_skipped: int
    seconds: float
    forward_seconds: float
    resumed_at_row: int
    class_ids: list[int]
    class_names: list[str]
    tile_choice: Any = None
    """The :class:`geolesf.predict.autotile.TileChoice` of a ``tile="auto"`` run, else None."""

    @property
    def megapixels_per_second(self) -> float:
        return self.height * self.width / 1e6 / max(self.seconds, 1e-9)


@dataclass(frozen=True)
class RunSettings:
    """How a streaming run proceeds and ends; none of these change the bytes it writes."""

    resume: bool = False
    progress: bool = True
    checkpoint_every: float = 30.0
    overview_resampling: str = "nearest"
    gdal_cache_mb: int = 16
    on_flush: Callable[[int], None] | None = None
    qml: bool = True


class PendingRows:
    """Finished rows ``[flushed, flushed + n)`` waiting for a block-aligned write.

    Allocated once, ``block`` + one tile height rows of the scene width, and reused band after
    band: nothing grows with the scene height.
    """

    def __init__(self, plan: RowPlan, classes: int) -> None:
        capacity = plan.block + plan.th
        self.block, self.width = plan.block, plan.width
        self.ids = np.empty((capacity, plan.width), dtype=plan.out_dtype)
        self.probs = np.empty((classes, capacity, plan.width), dtype=plan.prob_dtype) if plan.want_probs else None
        self.n = 0
        self.flushed = 0

    def restore(self, flushed: int, ids: np.ndarray, probs: np.ndarray | None) -> None:
        """The pending rows of a resume state."""
        self.flushed, self.n = flushed, ids.shape[0]
        self.ids[:self.n] = ids
        if self.probs is not None:
            self.probs[:, :self.n] = probs

    def band(self, g: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Views of the next ``g`` rows, where a tile row writes its finished band."""
        probs = self.probs[:, self.n:self.n + g] if self.probs is not None else None
        return self.ids[self.n:self.n + g], probs

    def flush(self, dst: Any, dstp: Any, final: bool) -> None:
        """Write the whole blocks of pending rows (all of them when ``final``) and keep the rest."""
        from rasterio.windows import Window

        n = self.n if final else (self.n // self.block) * self.block
        if n == 0:
            return
        win = Window(0, self.flushed, self.width, n)
        dst.write(self.ids[:n], 1, window=win)
        if dstp is not None:
            for b in range(self.probs.shape[0]):  # one contiguous band at a time: no (C, n, W) copy
                dstp.write(self.probs[b, :n], b + 1, window=win)
        rest = self.n - n
        if rest:
            self.shift_front(self.ids, n, rest)
            if self.probs is not None:
                self.shift_front(self.probs, n, rest)
        self.n = rest
        self.flushed += n

    @staticmethod
    def shift_front(buf: np.ndarray, n: int, rest: int) -> None:
        """Move rows ``[n, n + rest)`` of ``buf`` (rows on the last axis but one) to the front."""
        for s0 in range(0, rest, n):  # chunks of ≤ n rows never overlap their destination
            k = min(n, rest - s0)
            buf[..., s0:s0 + k, :] = buf[..., n + s0:n + s0 + k, :]


class StreamingRun:
    """One scene, tile row by tile row, into ``paths`` (see the module docstring)."""

    def __init__(self, src: Any, pm: PredictModel, plan: RowPlan, paths: _cog.PartialPaths,
                 tags: dict[str, str], fingerprint: str, settings: RunSettings) -> None:
        self.src, self.pm, self.plan, self.paths = src, pm, plan, paths
        self.tags, self.fp, self.settings = tags, fingerprint, settings
        self.loop = TileRowLoop(src, pm, plan)
        C = len(pm.class_ids)
        # Every buffer that spans the scene width is allocated once, here, and reused band after
        # band. One carry buffer serves both sides of a step: each tile column reads its carry
        # columns before it writes the next band's carry into the same columns.
        carry_rows = max(plan.carry_rows(i) for i in range(len(plan.rows)))
        self.carry = np.empty((C + 1, carry_rows, plan.width), dtype=np.float32)
        self.hc, self.carry_start = 0, 0
        self.pending = PendingRows(plan, C)
        self.first_row, self.tiles_done, self.resumed_at = 0, 0, 0
        self.total_tiles = len(plan.rows) * len(plan.cols)
        self.dst: Any = None
        self.dstp: Any = None

    def run(self) -> TiledResult:
        import rasterio

        from geolesf.predict.batching import pin_mmap_threshold

        # dense: peak memory the same in every run; patch models: batches reused in the heap
        pin_mmap_threshold(kind=self.pm.kind)  # (geolesf.predict.batching)
        state = self._load_state()
        env = rasterio.Env(GDAL_CACHEMAX=int(self.settings.gdal_cache_mb))
        env.__enter__()
        started = time.perf_counter()
        try:
            self._open(state)
            state = None
            self._rows()
            self._finish()
        except BaseException:
            self._abort()
            raise
        finally:
            env.__exit__(None, None, None)
        seconds = time.perf_counter() - started
        skipped, pm = self.loop.tiles_skipped, self.pm
        return TiledResult(
            out=self.paths.dest, probabilities=self.paths.probs, height=self.plan.height, width=self.plan.width,
            tiles=self.total_tiles, tiles_run=self.total_tiles - skipped, tiles_skipped=skipped, seconds=seconds,
            forward_seconds=self.loop.runner.forward_seconds, resumed_at_row=self.resumed_at,
            class_ids=list(pm.class_ids), class_names=list(pm.class_names),
        )

    def _load_state(self) -> _resume.ResumeState | None:
        paths = self.paths
        if self.settings.resume and paths.state.is_file():
            state = _resume.load_state(paths.state, self.fp)
            for p in (paths.tmp, paths.tmp_probs):
                if p is not None and not p.is_file():
                    raise DataError(f"{p}: partial output of the interrupted run is missing; run without --resume")
            return state
        if self.settings.resume:
            warnings.warn(f"--resume: no interrupted run of {paths.dest} found; starting from the beginning",
                          UserWarning, stacklevel=4)
        return None

    def _open(self, state: _resume.ResumeState | None) -> None:
        """Fresh temporary GeoTIFF(s), or those of the interrupted run with its carry, rows and counters."""
        if state is None:
            self.dst, self.dstp = open_temps(self.paths, self.plan, self.pm, self.src.crs, self.src.transform,
                                             self.tags)
            return
        self._reopen()
        self.first_row, self.carry_start = state.next_row, state.carry_start
        self.tiles_done, self.loop.tiles_skipped = state.tiles_done, state.tiles_skipped
        self.hc = state.carry.shape[1]
        self.carry[:, :self.hc] = state.carry
        self.pending.restore(state.flushed, state.pending_ids, state.pending_probs)
        self.resumed_at = state.flushed

    def _reopen(self) -> None:
        self.dst = _cog.reopen(self.paths.tmp)
        self.dstp = _cog.reopen(self.paths.tmp_probs) if self.plan.want_probs else None

    def _rows(self) -> None:
        from tqdm.auto import tqdm

        plan, rows, pending, settings = self.plan, self.plan.rows, self.pending, self.settings
        last_ckpt = time.perf_counter()
        bar = tqdm(total=self.total_tiles, initial=self.tiles_done, unit="tile", desc=f"predict {self.src.name}",
                   disable=not settings.progress, dynamic_ncols=True)

        def tile_done() -> None:
            self.tiles_done += 1
            bar.update(1)

        for i in range(self.first_row, len(rows)):
            y_next = plan.band_end(i)
            g = y_next - rows[i]
            last = i + 1 == len(rows)
            assert self.carry_start == rows[i] or self.hc == 0
            new_hc = plan.carry_rows(i)
            band_ids, band_probs = pending.band(g)
            self.loop(i, self.carry[:, :self.hc], band_ids, band_probs, self.carry[:, :new_hc], on_tile=tile_done)
            self.hc, self.carry_start = new_hc, y_next
            pending.n += g
            before = pending.flushed
            pending.flush(self.dst, self.dstp, final=last)
            if pending.flushed > before and not last:
                if time.perf_counter() - last_ckpt >= settings.checkpoint_every:
                    self._checkpoint(i + 1)
                    last_ckpt = time.perf_counter()
                if settings.on_flush is not None:
                    settings.on_flush(pending.flushed)
        bar.close()

    def _checkpoint(self, next_row: int) -> None:
        """Close the temporary files (GDAL writes its blocks), save the resume state, reopen them."""
        self.dst.close()
        if self.dstp is not None:
            self.dstp.close()
        p = self.pending
        _resume.save_state(self.paths.state, _resume.ResumeState(
            fingerprint=self.fp, next_row=next_row, flushed=p.flushed, carry_start=self.carry_start,
            carry=self.carry[:, :self.hc], pending_ids=p.ids[:p.n],
            pending_probs=p.probs[:, :p.n] if p.probs is not None else None, tiles_done=self.tiles_done,
            tiles_skipped=self.loop.tiles_skipped))
        self._reopen()

    def _finish(self) -> None:
        self.dst.close()
        self.dst = None
        if self.dstp is not None:
            self.dstp.close()
            self.dstp = None
        finalize_cogs(self.paths, self.plan, self.settings.overview_resampling)
        if self.paths.state.exists():
            self.paths.state.unlink()
        write_style(self.paths.dest, self.pm, self.settings.qml, self.paths.probs)

    def _abort(self) -> None:
        """After an error or interrupt: keep what a resume needs, else remove every partial file."""
        for ds in (self.dst, self.dstp):
            if ds is not None and not ds.closed:
                ds.close()
        if self.paths.state.exists():
            if self.settings.progress:
                print(f"\nprediction interrupted; partial work kept beside {self.paths.dest} — rerun with "
                      "--resume to continue", file=sys.stderr)
        else:
            self.paths.remove()
