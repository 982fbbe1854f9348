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

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from geolesf.colors import hex_to_rgb
from geolesf.errors import ConfigError
from geolesf.io import cog as _cog
from geolesf.io.atomic import output_lock
from geolesf.predict import resume as _resume
from geolesf.predict.autotile import PIXEL_MODEL_TILE, auto_tile, parse_size
from geolesf.predict.model import PredictModel, as_predict_model, load_predict_model
from geolesf.predict.options import TilingOptions, check_inputs, output_dtype
from geolesf.predict.output import check_destinations, check_free_space, scene_tags
from geolesf.predict.sources import open_source
from geolesf.predict.stream import RunSettings, StreamingRun, TiledResult

__all__ = ["TiledResult", "predict_file", "predict_raster", "predict_request"]


def predict_raster(
    source: Any,
    model: Any,
    out: str | Path,
    *,
    tile: int | str = 512,
    overlap: int = 64,
    blend: str = "cosine",
    batch_size: int | None = None,
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
    memory_format: str = "auto",
    memory_budget: int | str | None = None,
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
    ``qml`` writes the QGIS styles beside ``out`` (paletted legend with class names) and beside the
    probabilities (single-band pseudocolour on the first class, :func:`geolesf.io.qml.probability_qml`).
    ``memory_format``: layout of the dense batch input — ``auto`` (channels-last on CPU for a
    convolutional ``nn.Module``: faster, equal to the ``NCHW`` result up to float rounding),
    ``channels_last`` or ``contiguous`` (:mod:`geolesf.predict.batching`). ``batch_size``: tiles per
    forward (default 16).

    ``tile="auto"``: the tile side (and, without ``batch_size``, the batch) of a dense model is chosen
    for this scene with the least overlap waste whose memory fits ``memory_budget`` (bytes or a size
    such as ``"2GiB"``; default a quarter of the available memory, at most 1 GiB), the model's memory
    per pixel measured by a probe forward (:mod:`geolesf.predict.autotile`); the choice is printed
    (when ``progress``) and returned in the result. Per-pixel patch models keep a 512 px tile.
    """
    auto, budget = _auto_args(tile, memory_budget)
    opts = TilingOptions(tile=PIXEL_MODEL_TILE if auto else int(tile), overlap=overlap, blend=blend, margin=margin,
                         blend_on=blend_on, batch_size=16 if batch_size is None else batch_size,
                         pixel_batch=pixel_batch, probabilities_dtype=probabilities_dtype, nodata=nodata,
                         out_nodata=out_nodata, block=block, device=device, memory_format=memory_format)
    settings = RunSettings(resume=resume, progress=progress, checkpoint_every=checkpoint_every,
                           overview_resampling=overview_resampling, gdal_cache_mb=gdal_cache_mb,
                           on_flush=on_flush, qml=qml)
    out = Path(out)
    probs_path = Path(probabilities) if probabilities is not None else None
    check_destinations(source, out, probs_path)
    pm = as_predict_model(model, class_names=class_names, colors=colors)
    # One run per destination at a time: the partial files and resume state have fixed names.
    with output_lock(out, probs_path):
        src = open_source(source, nodata)
        try:
            choice = _choose(src, pm, opts, budget, batch_size, progress) if auto else None
            if choice is not None:
                opts = dataclasses.replace(opts, tile=choice.tile, batch_size=choice.batch, margin=margin)
            check_inputs(src, pm, opts.tile)
            result = _stream(src, pm, opts.for_model(pm), out, probs_path, settings)
            result.tile_choice = choice
            return result
        finally:
            src.close()


def _auto_args(tile: int | str, memory_budget: int | str | None) -> tuple[bool, int | None]:
    """Whether ``tile`` asks for ``auto``, and the budget in bytes (None: the default)."""
    if isinstance(tile, str) and tile != "auto":
        raise ConfigError(f"--tile must be a number of pixels or 'auto', found '{tile}'")
    return isinstance(tile, str), None if memory_budget is None else parse_size(memory_budget)


def _choose(src: Any, pm: PredictModel, opts: TilingOptions, budget: int | None, batch_size: int | None,
            progress: bool) -> Any:
    """The :class:`~geolesf.predict.autotile.TileChoice` of a dense model on ``src`` (None for patch models)."""
    if pm.kind != "dense":
        return None
    return auto_tile(pm, src.height, src.width, _model_bands(src, pm), overlap=opts.overlap, budget=budget,
                     batch=batch_size, device=opts.device, softmax=opts.blend_on == "probabilities", verbose=progress)


def _model_bands(src: Any, pm: PredictModel) -> int:
    """Bands of the model's input: the normalised first pixel of the scene tells when ``normalise`` changes them."""
    if pm.normalise is None:
        return int(src.count)
    data, _ = src.read(0, 1, 0, 1)
    return int(pm.normalise(data).shape[0])


def _stream(src: Any, pm: PredictModel, opts: TilingOptions, out: Path, probs_path: Path | None,
            settings: RunSettings) -> TiledResult:
    """Plan, disk-space check, resume fingerprint and the run of an opened, checked source."""
    out_dtype, nodata_out = output_dtype(pm.class_ids, opts.out_nodata)
    plan = opts.row_plan(src.height, src.width, want_probs=probs_path is not None, out_dtype=out_dtype,
                         nodata_out=nodata_out)
    check_free_space(out, src.height, src.width, out_dtype, len(pm.class_ids) if probs_path else 0,
                     opts.prob_u8, "the output", probs=probs_path)
    tags = scene_tags(pm, opts, src.name)
    if getattr(src, "acquired", None):  # the input's acquisition time, for the STAC Item
        tags["acquired"] = src.acquired
    fp = _resume.fingerprint({
        "source": src.identity(), "tags": tags, "batch_size": opts.batch_size, "block": opts.block,
        "nodata": opts.nodata, "out_nodata": nodata_out, "probs": probs_path.name if probs_path else None,
        "probs_dtype": opts.probabilities_dtype, "device": opts.device, "pixel_batch": opts.pixel_batch,
        "memory_format": opts.memory_format,
        "class_ids": pm.class_ids, "class_names": pm.class_names, "colors": [str(c) for c in pm.colors],
    })
    return StreamingRun(src, pm, plan, _cog.PartialPaths(out, probs_path), tags, fp, settings).run()


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
    """CLI entry: load ``checkpoint`` (checking it holds ``model_name``; a :class:`PredictModel` is used as
    it is) and run :func:`predict_raster`.

    ``batch_size`` counts tiles for dense models (default 16) and pixels for patch models (default
    1024). ``preview`` also writes a PNG beside ``out`` when the scene has at most 25 Mpx.
    ``options`` go to the checkpoint format's loader (e.g. ``classes`` for open-vocabulary models).
    """
    if preview:
        from geolesf.io.atomic import check_outputs

        ckpt_in = None if isinstance(checkpoint, PredictModel) else checkpoint
        check_outputs({"input scene": scene, "--checkpoint": ckpt_in},
                      {"preview of --out": Path(out).with_suffix(".png")}, overwrite=True)
    pm = checkpoint if isinstance(checkpoint, PredictModel) else load_predict_model(checkpoint, model_name, options)
    if pm.kind == "pixel":
        # 1024 pixels: a 4096-pixel batch of 7×7×224 patches takes ~1.7 GB more in S²Mamba (peak 3.6 GB
        # instead of 1.9 GB on a 4,000-wide scene, benchmarks/bench_large_scene.py) for no speed gain on CPU
        kwargs["pixel_batch"] = batch_size or 1024
    else:
        kwargs["batch_size"] = batch_size  # None: 16, or chosen with tile="auto"
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
    checkpoint: Any = r.checkpoint
    batch_size = r.batch_size
    if getattr(r, "engine", "torch") == "onnxruntime":  # a .onnx from geolesf export-model
        from geolesf.predict.onnx_engine import load_onnx_model

        checkpoint = load_onnx_model(r.checkpoint, r.model_name, r.device)
        if batch_size is None and checkpoint.kind == "pixel":
            # onnxruntime keeps the unrolled scan's intermediates: 256 patches of S²Mamba peak at ~0.7 GB
            # instead of ~2.4 GB at 1024, for the same px/s (docs/onnx.md)
            batch_size = 256
    return predict_file(
        r.scene, checkpoint, r.out, model_name=r.model_name, batch_size=batch_size, device=r.device,
        probabilities=r.probabilities, nodata=r.nodata, resume=r.resume,
        probabilities_dtype="uint8" if r.probabilities_uint8 else "float32", preview=r.preview,
        options=dict(r.options), **r.tiling(),
    )
