"""Whole-scene classification of a (small) hyperspectral cube with a trained patch model.

Reads the cube with :func:`geolesf.io.hsi.read_cube`, checks its band count against the
checkpoint, normalises with the *training* statistics stored in the checkpoint, classifies
every pixel from its ``P×P`` neighbourhood and writes a class-map GeoTIFF (colour table,
class names, provenance tags, CRS/transform copied from the input when it has them) plus
a PNG preview. The cube is held in memory: this path is for scenes of up to a few million
pixels (Indian Pines is 21,025).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geolesf import __version__
from geolesf.errors import DataError
from geolesf.io.cube import wavelength_tags


@dataclass
class SceneResult:
    class_map: np.ndarray
    """(H, W) uint8 map of the checkpoint's original class ids."""
    out: Path
    preview: Path | None
    seconds: float
    pixels_per_second: float


def check_bands(found: int, expected: int, source: str, model: str) -> None:
    if found != expected:
        raise DataError(f"{source} has {found} bands; model {model} expects {expected}")


def classify_cube(
    cube_spec: str | Path,
    checkpoint: str | Path,
    out: str | Path,
    model_name: str | None = None,
    batch_size: int = 1024,
    device: str = "cpu",
    preview: bool = True,
    progress: bool = True,
    bundle: Any = None,
) -> SceneResult:
    """Classify a whole cube with ``checkpoint``; ``bundle``: an already loaded checkpoint-like object used
    instead of loading it (:class:`geolesf.predict.onnx_engine.PatchBundle` of an exported .onnx)."""
    import torch

    from geolesf.io.atomic import check_tif_out
    from geolesf.io.cog import acquired_iso
    from geolesf.io.hsi import read_cube_for_prediction
    from geolesf.io.writers import write_class_map, write_preview_png
    from geolesf.methods.hsi.checkpoint import load_any as load_patch_checkpoint
    from geolesf.predict.model import check_model_name
    from geolesf.predict.patches import predict_scene

    out = Path(out)
    check_tif_out(out, "--out")
    ckpt = bundle if bundle is not None else load_patch_checkpoint(checkpoint)
    check_model_name(checkpoint, ckpt.model_name, model_name)
    cube, valid = read_cube_for_prediction(cube_spec)  # NaN/±Inf pixels: nodata (0), as in the tiled path
    check_bands(cube.data.shape[2], ckpt.scene_bands, str(cube_spec), ckpt.model_name)
    crs_note = None if cube.crs is not None else cube.georef_note()
    if crs_note and progress:  # before the work (and its progress bar) starts
        print(f"note: {crs_note}", flush=True)
    x = ckpt.normalise(ckpt.select_bands(cube.data, 2, str(cube_spec)))
    model = ckpt.model.to(device)
    start = time.perf_counter()
    with torch.inference_mode():
        index_map = predict_scene(model, x, ckpt.patch_size, ckpt.padding, batch_size=batch_size, progress=progress)
    seconds = time.perf_counter() - start
    ids = np.asarray(ckpt.class_ids)
    if ids.max() > 255:
        raise DataError(f"{checkpoint}: class id {ids.max()} does not fit a uint8 class map")
    class_map = ids[index_map].astype(np.uint8)
    if valid is not None:
        class_map[~valid] = 0
    names = {0: "unlabelled", **dict(zip(ckpt.class_ids, ckpt.class_names))}
    colors = {0: (0, 0, 0), **{cid: tuple(c) for cid, c in zip(ckpt.class_ids, ckpt.colors)}}
    tags: dict[str, Any] = {
        "geolesf_version": __version__,
        "model": ckpt.model_name,
        "weights_sha256": ckpt.sha256,
        "source": str(cube_spec),
        "patch_size": ckpt.patch_size,
        **wavelength_tags(_used_wavelengths(cube.wavelengths, ckpt.band_selection)),
    }
    acquired = acquired_iso(getattr(cube, "acquired", None))
    if acquired:
        tags["acquired"] = acquired
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        write_class_map(out, class_map, names, colors, crs=cube.crs, transform=cube.transform, tags=tags)
    png = None
    if preview:
        png = out.with_suffix(".png")
        write_preview_png(png, class_map, names, colors, title=f"{ckpt.model_name}: {Path(str(cube_spec)).name}")
    n = class_map.size
    return SceneResult(class_map, out, png, seconds, n / max(seconds, 1e-9))


def predict_model(checkpoint: Any, model_name: str | None, options: dict[str, Any]) -> Any:
    """The tiled predictor's ``pixel`` model for a patch or spectrum checkpoint (no options are used).

    A spectrum model (rf, svm) is a ``1×1`` patch model (:class:`~geolesf.methods.hsi.spectrum.SpectrumModule`)."""
    from geolesf.methods.hsi.checkpoint import load_any as load
    from geolesf.predict.model import PredictModel, check_model_name

    pk = load(checkpoint)
    check_model_name(checkpoint, pk.model_name, model_name)

    def normalise(x: np.ndarray) -> np.ndarray:
        x = pk.select_bands(x, 0, "the scene")
        return np.ascontiguousarray(pk.normalise(x.transpose(1, 2, 0)).transpose(2, 0, 1))

    return PredictModel(
        module=pk.model, name=pk.model_name, kind="pixel", class_ids=list(pk.class_ids),
        class_names=list(pk.class_names), colors=list(pk.colors), sha256=pk.sha256 or "",
        in_bands=pk.scene_bands, normalise=normalise, patch_size=pk.patch_size, padding=pk.padding,
        normalisation=_normalisation_record(pk),
    )


def _normalisation_record(pk: Any) -> dict[str, Any] | None:
    """``normalise`` above as plain data (see ``PredictModel.normalisation``); None for spectrum models."""
    if not hasattr(pk, "pca_components"):
        return None

    def listed(a: Any) -> Any:
        return None if a is None else np.asarray(a).tolist()

    record = pk.band_selection
    dtypes = {np.asarray(a).dtype.name for a in (pk.band_mean, pk.pca_components) if a is not None}
    return {"kind": "spectra", "dtype": dtypes.pop() if len(dtypes) == 1 else "float32",
            "keep": None if record is None else [int(i) for i in record["keep"]], "bands_in": pk.scene_bands,
            "band_mean": listed(pk.band_mean), "band_std": listed(pk.band_std),
            "pca_components": listed(pk.pca_components), "pca_mean": listed(pk.pca_mean)}


def _used_wavelengths(wavelengths: list[float] | None, record: dict[str, Any] | None) -> list[float] | None:
    """The input wavelengths the model saw: the scene's, after the checkpoint's band selection."""
    if wavelengths is None or record is None:
        return wavelengths
    keep = [int(i) for i in record.get("keep", [])]
    return [wavelengths[i] for i in keep if i < len(wavelengths)]
