"""Tiled, streaming, georeferenced prediction of a whole scene: ``predict_raster``.

The scene is cut into ``tile × tile`` windows overlapping by ``overlap`` pixels (the last tile
of each axis is clamped to the scene edge, never run twice). Dense models (registry task
``segmentation``: ``(B, bands, H, W) → (B, C, H, W)``) run on batches of tiles; per-pixel patch
models (task ``hsi-patch``, S²Mamba) classify every pixel of a tile from its ``P×P``
neighbourhood, read with a halo of the patch radius, so the result equals whole-scene
classification exactly.

Memory does not grow with the scene height, and only a few bytes per pixel of width: tiles are
processed row by row, left to right; float accumulators are kept only for the columns of the
current tile and for the ``overlap`` rows that the next tile row will still add to. Finished
rows are written to a temporary tiled GeoTIFF in full-width, block-aligned bands; at the end it
becomes a Cloud-Optimized GeoTIFF (overviews, deflate) renamed onto the destination, with the
input's CRS and transform (bit-exact), nodata, colour table, class names and provenance tags.

Nodata: the dataset mask (nodata value, alpha band or internal mask), or the user's ``nodata``
override. Invalid pixels get zero weight, tiles without a valid pixel never reach the model,
and pixels without any valid contribution are written as the output nodata.

Interrupted runs (Ctrl-C, crash, an exception from ``on_flush``) keep their partial files and a
resume state beside the destination (hidden names); ``resume=True`` continues and writes the
same bytes an uninterrupted run would. The destination itself is only ever a complete file.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geolesf import __version__
from geolesf.colors import hex_to_rgb
from geolesf.errors import ConfigError, DataError
from geolesf.io.atomic import check_tif_out
from geolesf.predict import blend as _blend
from geolesf.io import cog as _cog
from geolesf.predict import resume as _resume
from geolesf.predict.model import PredictModel, as_predict_model, load_predict_model
from geolesf.predict.rowloop import RowPlan, TileRowLoop
from geolesf.predict.sources import open_source

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

    @property
    def megapixels_per_second(self) -> float:
        return self.height * self.width / 1e6 / max(self.seconds, 1e-9)


# --------------------------------------------------------------------------------------------
# tile runners


def _output_dtype(class_ids: Sequence[int], out_nodata: int | None) -> tuple[str, int]:
    ids = set(int(i) for i in class_ids)
    if out_nodata is None:
        out_nodata = next(v for v in (0, 255, 65535) if v not in ids)
    if int(out_nodata) in ids:
        raise ConfigError(f"output nodata {out_nodata} is also a class id; choose another")
    dtype = "uint8" if max(ids | {int(out_nodata)}) < 256 else "uint16"
    return dtype, int(out_nodata)


def _check_inputs(src: Any, pm: PredictModel, tile: int) -> None:
    if src.count < 1:
        raise DataError(f"{src.name} has no data bands")
    if pm.in_bands is not None and src.count != pm.in_bands:
        raise DataError(f"{src.name} has {src.count} bands; model {pm.name} expects {pm.in_bands}")
    if src.dtype.kind not in "biuf":
        raise DataError(f"{src.name}: unsupported pixel type {src.dtype}; expected integers or floats")
    if src.crs is None:
        warnings.warn(f"{src.name} has no CRS: the prediction is written in pixel coordinates "
                      "(not georeferenced)", UserWarning, stacklevel=3)
    if pm.kind == "dense" and tile % max(1, pm.size_divisor):
        d = pm.size_divisor
        raise ConfigError(f"--tile {tile}: model {pm.name} needs a multiple of {d} (try {max(d, tile - tile % d)})")


# --------------------------------------------------------------------------------------------
# main entry point


def check_options(*, tile: int, overlap: int, blend: str, margin: int | None, blend_on: str,
                  probabilities_dtype: str, block: int, batch_size: int) -> int:
    """Validate the tiling and output options before any work; returns the blend margin used."""
    if blend_on not in ("probabilities", "logits"):
        raise ConfigError(f"blend_on must be 'probabilities' or 'logits', found '{blend_on}'")
    if probabilities_dtype not in ("float32", "uint8"):
        raise ConfigError(f"probabilities dtype must be float32 or uint8, found '{probabilities_dtype}'")
    if block < 16 or block % 16:
        raise ConfigError(f"block must be a positive multiple of 16, found {block}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, found {batch_size}")
    margin = _blend.check_geometry(tile, overlap, blend, margin)
    return margin


def predict_raster(
    source: Any,
    model: Any,
    out: str | Path,
    *,
    tile: int = 512,
    overlap: int = 64,
    blend: str = "cosine",
    batch_size: int = 16,
    margin: int | None = None,
    blend_on: str = "probabilities",
    probabilities: str | Path | None = None,
    probabilities_dtype: str = "float32",
    nodata: float | None = None,
    out_nodata: int | None = None,
    block: int = 512,
    device: str = "cpu",
    resume: bool = False,
    progress: bool = True,
    class_names: Sequence[str] | None = None,
    colors: Sequence[Any] | None = None,
    pixel_batch: int = 4096,
    checkpoint_every: float = 30.0,
    overview_resampling: str = "nearest",
    gdal_cache_mb: int = 16,
    on_flush: Callable[[int], None] | None = None,
    qml: bool = True,
) -> TiledResult:
    """Predict every pixel of ``source`` with ``model`` and write a class-map COG at ``out``.

    ``source``: a raster path (anything rasterio opens) or an ``xarray.DataArray`` / numpy array
    ``(bands, y, x)``. ``model``: a checkpoint path, a :class:`PredictModel` or an ``nn.Module``
    (dense; pass ``class_names``). ``blend``: ``cosine`` | ``linear`` | ``none`` (see
    :mod:`geolesf.predict.blend`), applied to softmax ``probabilities`` or raw ``logits``
    (``blend_on``). ``probabilities``: optional path of a per-class COG (``float32``, nodata NaN,
    or ``uint8`` scaled by 1/254, nodata 255). ``nodata`` overrides the input's nodata;
    ``out_nodata`` defaults to 0, or 255 when 0 is a class id. ``on_flush(rows_written)`` is
    called after each block-aligned band of rows is written (after the resume state is saved).
    ``qml`` writes the QGIS style (paletted legend with class names) beside ``out``.
    """
    margin = check_options(tile=tile, overlap=overlap, blend=blend, margin=margin, blend_on=blend_on,
                           probabilities_dtype=probabilities_dtype, block=block, batch_size=batch_size)
    out = Path(out)
    probs_path = Path(probabilities) if probabilities is not None else None
    check_tif_out(out, "--out")
    if probs_path is not None:
        check_tif_out(probs_path, "--probabilities")
        if probs_path.resolve() == out.resolve():
            raise ConfigError("--probabilities must differ from --out")
    if isinstance(source, (str, Path)) and Path(source).resolve() == out.resolve():
        raise DataError(f"--out {out} is the input scene; choose another path")
    pm = as_predict_model(model, class_names=class_names, colors=colors)
    src = open_source(source, nodata)
    try:
        _check_inputs(src, pm, tile)
        if pm.kind == "pixel":
            overlap, blend, margin = 0, "none", 0
        out_dtype, nodata_out = _output_dtype(pm.class_ids, out_nodata)
        n_classes = len(pm.class_ids)
        prob_item = 4 if probabilities_dtype == "float32" else 1
        need = _cog.estimate_bytes(src.height, src.width, np.dtype(out_dtype).itemsize,
                                   n_classes if probs_path else 0, prob_item)
        free = _cog.free_bytes(out.parent)
        if need > free:
            raise DataError(f"{out.parent}: about {need / 1e9:.1f} GB are needed for the output, "
                            f"only {free / 1e9:.1f} GB are free")
        return _run(src, pm, out, probs_path, locals_=dict(
            tile=tile, overlap=overlap, blend=blend, margin=margin, batch_size=batch_size,
            blend_on=blend_on, probabilities_dtype=probabilities_dtype, nodata=nodata,
            out_dtype=out_dtype, nodata_out=nodata_out, block=block, device=device, resume=resume,
            progress=progress, pixel_batch=pixel_batch, checkpoint_every=checkpoint_every,
            overview_resampling=overview_resampling, gdal_cache_mb=gdal_cache_mb, on_flush=on_flush,
            qml=qml,
        ))
    finally:
        src.close()


def _run(src: Any, pm: PredictModel, out: Path, probs_path: Path | None, locals_: dict[str, Any]) -> TiledResult:
    import rasterio
    from rasterio.windows import Window
    from tqdm.auto import tqdm

    o = locals_
    tile, overlap, block = o["tile"], o["overlap"], o["block"]
    H, W = src.height, src.width
    C = len(pm.class_ids)
    nodata_out = o["nodata_out"]
    want_probs = probs_path is not None
    prob_u8 = o["probabilities_dtype"] == "uint8"
    plan = RowPlan(
        height=H, width=W, tile=tile, overlap=overlap, blend=o["blend"], margin=o["margin"],
        batch_size=o["batch_size"], blend_on=o["blend_on"], want_probs=want_probs, prob_u8=prob_u8,
        out_dtype=o["out_dtype"], nodata_out=nodata_out, nodata=o["nodata"], device=o["device"],
        pixel_batch=o["pixel_batch"], block=block,
    )
    rows, th = plan.rows, plan.th
    step = TileRowLoop(src, pm, plan)
    tags = {
        "geolesf_version": __version__, "model": pm.name, "weights_sha256": pm.sha256,
        "tile": str(tile), "overlap": str(overlap), "blend": o["blend"], "blend_margin": str(o["margin"]),
        "blend_on": o["blend_on"], "source": src.name,
    }
    if pm.kind == "pixel":
        tags["patch_size"] = str(pm.patch_size)
    paths = _cog.PartialPaths(out, probs_path)
    fp = _resume.fingerprint({
        "source": src.identity(), "tags": tags, "batch_size": o["batch_size"], "block": block,
        "nodata": o["nodata"], "out_nodata": nodata_out, "probs": probs_path.name if probs_path else None,
        "probs_dtype": o["probabilities_dtype"], "device": o["device"], "pixel_batch": o["pixel_batch"],
        "class_ids": pm.class_ids, "class_names": pm.class_names, "colors": [str(c) for c in pm.colors],
    })
    state = None
    if o["resume"] and paths.state.is_file():
        state = _resume.load_state(paths.state, fp)
        for p in (paths.tmp, paths.tmp_probs):
            if p is not None and not p.is_file():
                raise DataError(f"{p}: partial output of the interrupted run is missing; run without --resume")
    elif o["resume"]:
        warnings.warn(f"--resume: no interrupted run of {out} found; starting from the beginning",
                      UserWarning, stacklevel=3)

    env = rasterio.Env(GDAL_CACHEMAX=int(o["gdal_cache_mb"]))
    env.__enter__()
    dst = dstp = None
    total_tiles = len(rows) * len(plan.cols)
    started = time.perf_counter()
    try:
        if state is None:
            paths.remove()
            dst = _cog.open_temp(paths.tmp, height=H, width=W, count=1, dtype=o["out_dtype"], nodata=nodata_out,
                                 crs=src.crs, transform=src.transform, block=block)
            _cog.write_class_metadata(dst, pm.class_ids, pm.class_names, pm.colors, nodata_out, tags)
            if want_probs:
                dstp = _cog.open_temp(paths.tmp_probs, height=H, width=W, count=C,
                                      dtype="uint8" if prob_u8 else "float32",
                                      nodata=255 if prob_u8 else float("nan"), crs=src.crs,
                                      transform=src.transform, block=block, compress="deflate")
                _cog.write_prob_metadata(dstp, pm.class_names, 1 / 254 if prob_u8 else None, tags)
            first_row, flushed, carry_start = 0, 0, 0
            tiles_done = tiles_skipped = 0
        else:
            dst = _cog.reopen(paths.tmp)
            dstp = _cog.reopen(paths.tmp_probs) if want_probs else None
            first_row, flushed, carry_start = state.next_row, state.flushed, state.carry_start
            tiles_done, tiles_skipped = state.tiles_done, state.tiles_skipped
        # Every buffer that spans the scene width is allocated once, here, and reused band after
        # band: two accumulator carries (overlap rows, swapped each band) and the finished rows
        # waiting for a block-aligned write. Nothing grows with the scene height.
        carry_rows = max(plan.carry_rows(i) for i in range(len(rows)))
        # One carry buffer serves both sides of a step: each tile column reads its carry columns
        # before it writes the next band's carry into the same columns.
        carry_buf = np.empty((C + 1, carry_rows, W), dtype=np.float32)
        capacity = block + th
        pend_ids = np.empty((capacity, W), dtype=o["out_dtype"])
        pend_probs = np.empty((C, capacity, W), dtype=plan.prob_dtype) if want_probs else None
        n_pend, hc = 0, 0
        if state is not None:
            hc, n_pend = state.carry.shape[1], state.pending_ids.shape[0]
            carry_buf[:, :hc] = state.carry
            pend_ids[:n_pend] = state.pending_ids
            if want_probs:
                pend_probs[:, :n_pend] = state.pending_probs
            state = None
        resumed_at = flushed
        last_ckpt = time.perf_counter()
        bar = tqdm(total=total_tiles, initial=tiles_done, unit="tile", desc=f"predict {src.name}",
                   disable=not o["progress"], dynamic_ncols=True)

        def shift_front(buf: np.ndarray, n: int, rest: int) -> None:
            """Move rows ``[n, n + rest)`` of ``buf`` (rows on the last axis but one) to the front."""
            for s0 in range(0, rest, n):  # chunks of ≤ n rows never overlap their destination
                k = min(n, rest - s0)
                buf[..., s0:s0 + k, :] = buf[..., n + s0:n + s0 + k, :]

        def flush(final: bool) -> None:
            nonlocal n_pend, flushed
            n = n_pend if final else (n_pend // block) * block
            if n == 0:
                return
            win = Window(0, flushed, W, n)
            dst.write(pend_ids[:n], 1, window=win)
            if dstp is not None:
                for b in range(C):  # one contiguous band at a time: no (C, n, W) copy
                    dstp.write(pend_probs[b, :n], b + 1, window=win)
            rest = n_pend - n
            if rest:
                shift_front(pend_ids, n, rest)
                if pend_probs is not None:
                    shift_front(pend_probs, n, rest)
            n_pend = rest
            flushed += n

        def tile_done() -> None:
            nonlocal tiles_done
            tiles_done += 1
            bar.update(1)

        step.tiles_skipped = tiles_skipped
        for i in range(first_row, len(rows)):
            y_next = plan.band_end(i)
            g = y_next - rows[i]
            last = i + 1 == len(rows)
            assert carry_start == rows[i] or hc == 0
            new_hc = plan.carry_rows(i)
            step(i, carry_buf[:, :hc], pend_ids[n_pend:n_pend + g],
                 pend_probs[:, n_pend:n_pend + g] if want_probs else None, carry_buf[:, :new_hc],
                 on_tile=tile_done)
            tiles_skipped = step.tiles_skipped
            hc, carry_start = new_hc, y_next
            n_pend += g
            before = flushed
            flush(final=last)
            if flushed > before and i + 1 < len(rows):
                if time.perf_counter() - last_ckpt >= o["checkpoint_every"]:
                    dst.close()
                    if dstp is not None:
                        dstp.close()
                    _resume.save_state(paths.state, _resume.ResumeState(
                        fingerprint=fp, next_row=i + 1, flushed=flushed, carry_start=carry_start,
                        carry=carry_buf[:, :hc], pending_ids=pend_ids[:n_pend],
                        pending_probs=pend_probs[:, :n_pend] if want_probs else None, tiles_done=tiles_done,
                        tiles_skipped=tiles_skipped))
                    dst = _cog.reopen(paths.tmp)
                    dstp = _cog.reopen(paths.tmp_probs) if want_probs else None
                    last_ckpt = time.perf_counter()
                if o["on_flush"] is not None:
                    o["on_flush"](flushed)
        bar.close()
        dst.close()
        dst = None
        if dstp is not None:
            dstp.close()
            dstp = None
        res = o["overview_resampling"]
        _cog.finalize_cog(paths.tmp, out, paths.cog_tmp(out), block=block, resampling=res, predictor=False)
        if probs_path is not None:
            _cog.finalize_cog(paths.tmp_probs, probs_path, paths.cog_tmp(probs_path), block=block,
                              resampling="average", predictor=not prob_u8)
        if paths.state.exists():
            paths.state.unlink()
        if o["qml"]:
            from geolesf.export.qgis import raster_qml, write_qml

            write_qml(out.with_suffix(".qml"), raster_qml(pm.class_ids, pm.class_names, pm.colors))
    except BaseException:
        for ds in (dst, dstp):
            if ds is not None and not ds.closed:
                ds.close()
        if paths.state.exists():
            if o["progress"]:
                print(f"\nprediction interrupted; partial work kept beside {out} — rerun with --resume "
                      "to continue", file=sys.stderr)
        else:
            paths.remove()
        raise
    finally:
        env.__exit__(None, None, None)
    seconds = time.perf_counter() - started
    return TiledResult(
        out=out, probabilities=probs_path, height=H, width=W, tiles=total_tiles,
        tiles_run=total_tiles - tiles_skipped, tiles_skipped=tiles_skipped, seconds=seconds,
        forward_seconds=step.runner.forward_seconds, resumed_at_row=resumed_at, class_ids=list(pm.class_ids),
        class_names=list(pm.class_names),
    )


def predict_file(
    scene: str | Path,
    checkpoint: str | Path,
    out: str | Path,
    *,
    model_name: str | None = None,
    batch_size: int | None = None,
    preview: bool = False,
    options: dict[str, Any] | None = None,
    **kwargs: Any,
) -> TiledResult:
    """CLI entry: load ``checkpoint`` (checking it holds ``model_name``) and run :func:`predict_raster`.

    ``batch_size`` counts tiles for dense models (default 16) and pixels for patch models (default
    4096). ``preview`` also writes a PNG beside ``out`` when the scene has at most 25 Mpx.
    ``options`` go to the checkpoint format's loader (e.g. ``classes`` for open-vocabulary models).
    """
    pm = load_predict_model(checkpoint, model_name, options)
    if pm.kind == "pixel":
        kwargs["pixel_batch"] = batch_size or 4096
    else:
        kwargs["batch_size"] = batch_size or 16
    result = predict_raster(scene, pm, out, **kwargs)
    if preview and result.height * result.width <= 25_000_000:
        import rasterio

        from geolesf.io.writers import write_preview_png

        with rasterio.open(result.out) as src:
            arr, nd = src.read(1), src.nodata
        names = dict(zip(pm.class_ids, pm.class_names))
        cols = {i: hex_to_rgb(c) for i, c in zip(pm.class_ids, pm.colors)}
        if nd is not None and (arr == nd).any():
            names[int(nd)], cols[int(nd)] = "nodata", (0, 0, 0)
        write_preview_png(Path(result.out).with_suffix(".png"), arr, names, cols,
                          title=f"{pm.name}: {Path(str(scene)).name}")
    return result


def predict_request(request: Any) -> TiledResult:
    """:func:`predict_file` for a :class:`geolesf.formats.PredictRequest` (``geolesf predict``)."""
    r = request
    return predict_file(
        r.scene, r.checkpoint, r.out, model_name=r.model_name, batch_size=r.batch_size, device=r.device,
        probabilities=r.probabilities, nodata=r.nodata, resume=r.resume,
        probabilities_dtype="uint8" if r.probabilities_uint8 else "float32", preview=r.preview,
        options=dict(r.options), **r.tiling(),
    )
