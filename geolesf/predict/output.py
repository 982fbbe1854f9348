"""The class-map output every file-writing predictor shares: checks, tags, temporary GeoTIFFs, COGs.

:func:`geolesf.predict.tiled.predict_raster` and :func:`geolesf.predict.distributed.predict_distributed`
write the same bytes because they go through these functions: the same destination checks, the
same provenance tags (in the same order), the same temporary tiled GeoTIFFs with their metadata
written in the same order, and the same Cloud-Optimized GeoTIFF finalisation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from geolesf import __version__
from geolesf.io import cog as _cog
from geolesf.io.atomic import check_outputs, check_space, check_tif_out
from geolesf.predict.model import PredictModel
from geolesf.predict.options import TilingOptions
from geolesf.predict.rowloop import RowPlan


def check_destinations(source: Any, out: Path, probs: Path | None) -> None:
    """``out`` (and ``probs``) are writable GeoTIFF paths, distinct from each other and from ``source``
    (resolved paths, and the same inode for symlinks and hard links)."""
    check_tif_out(out, "--out")
    if probs is not None:
        check_tif_out(probs, "--probabilities")
    inputs = {"input scene": source} if isinstance(source, (str, Path)) else {}
    # Existing outputs are the caller's policy (the CLI's --overwrite); inputs are never written.
    check_outputs(inputs, {"--out": out, "--probabilities": probs}, overwrite=True)


def check_free_space(out: Path, height: int, width: int, out_dtype: str, prob_bands: int, prob_u8: bool,
                     what: str, probs: Path | None = None) -> None:
    """Refuse to start when the folder of ``out`` (and that of ``probs``) cannot hold ``what``: the
    class map and the probabilities, each as temporary GeoTIFF + COG (:func:`geolesf.io.cog.estimate_bytes`)."""
    need_map = _cog.estimate_bytes(height, width, np.dtype(out_dtype).itemsize, 0, 1)
    need_probs = _cog.estimate_bytes(height, width, 0, prob_bands, 1 if prob_u8 else 4)
    needs = [(out, need_map)]
    if prob_bands:
        needs.append((probs if probs is not None else out, need_probs))
    check_space(needs, what)


def scene_tags(pm: PredictModel, opts: TilingOptions, source_name: str) -> dict[str, str]:
    """Provenance tags of the output (``opts`` as the model runs them: :meth:`TilingOptions.for_model`)."""
    tags = {
        "geolesf_version": __version__, "model": pm.name, "weights_sha256": pm.sha256,
        "tile": str(opts.tile), "overlap": str(opts.overlap), "blend": opts.blend,
        "blend_margin": str(opts.blend_margin), "blend_on": opts.blend_on, "source": source_name,
    }
    if pm.kind == "pixel":
        tags["patch_size"] = str(pm.patch_size)
    return tags


def open_temps(paths: _cog.PartialPaths, plan: RowPlan, pm: PredictModel, crs: Any, transform: Any,
               tags: dict[str, str]) -> tuple[Any, Any]:
    """Fresh temporary tiled GeoTIFF(s) (class ids, probabilities) with their metadata; earlier
    partial files are removed first."""
    paths.remove()
    dst = _cog.open_temp(paths.tmp, height=plan.height, width=plan.width, count=1, dtype=plan.out_dtype,
                         nodata=plan.nodata_out, crs=crs, transform=transform, block=plan.block)
    _cog.write_class_metadata(dst, pm.class_ids, pm.class_names, pm.colors, plan.nodata_out, tags)
    dstp = None
    if plan.want_probs:
        assert paths.tmp_probs is not None
        dstp = _cog.open_temp(paths.tmp_probs, height=plan.height, width=plan.width, count=len(pm.class_ids),
                              dtype="uint8" if plan.prob_u8 else "float32",
                              nodata=255 if plan.prob_u8 else float("nan"), crs=crs,
                              transform=transform, block=plan.block, compress="deflate")
        _cog.write_prob_metadata(dstp, pm.class_names, 1 / 254 if plan.prob_u8 else None, tags)
    return dst, dstp


def finalize_cogs(paths: _cog.PartialPaths, plan: RowPlan, overview_resampling: str) -> None:
    """The closed temporary GeoTIFF(s) become Cloud-Optimized GeoTIFFs at their destinations.

    The probabilities (the larger file, where a full disk shows first) are finished first, and removed
    again if the class map then fails: a failed run leaves neither destination behind.
    """
    if paths.probs is not None:
        assert paths.tmp_probs is not None
        _cog.finalize_cog(paths.tmp_probs, paths.probs, block=plan.block,
                          resampling="average", predictor=not plan.prob_u8)
    try:
        _cog.finalize_cog(paths.tmp, paths.dest, block=plan.block,
                          resampling=overview_resampling, predictor=False)
    except BaseException:
        if paths.probs is not None:
            paths.probs.unlink(missing_ok=True)
        raise


def write_style(out: Path, pm: PredictModel, qml: bool, probs: Path | None = None) -> None:
    """``qml``: the QGIS styles beside ``out`` (paletted legend with class names) and beside ``probs``
    (single-band pseudocolour, :func:`geolesf.io.qml.probability_qml`)."""
    if qml:
        from geolesf.io.qml import probability_qml, raster_qml, write_qml

        write_qml(out.with_suffix(".qml"), raster_qml(pm.class_ids, pm.class_names, pm.colors))
        if probs is not None:
            write_qml(probs.with_suffix(".qml"), probability_qml(pm.class_names))
