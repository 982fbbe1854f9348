"""Inference adapter of unet checkpoints: the tiled predictor's ``dense`` model."""

from __future__ import annotations

from typing import Any


def predict_model(checkpoint: Any, model_name: str | None, options: dict[str, Any]) -> Any:
    """A ``dense`` :class:`~geolesf.predict.model.PredictModel` (no options are used)."""
    from geolesf.methods.unet.checkpoint import load
    from geolesf.predict.model import PredictModel, check_model_name

    ck = load(checkpoint)
    check_model_name(checkpoint, ck.model_name, model_name)
    return PredictModel(
        module=ck.model, name=ck.model_name, kind="dense", class_ids=ck.class_ids, class_names=ck.class_names,
        colors=ck.colors, sha256=ck.sha256 or "", in_bands=ck.in_bands, normalise=ck.normalise,
        size_divisor=int(getattr(ck.model, "size_divisor", 1)),
        normalisation={"kind": "bands", "dtype": "float32",
                       "band_mean": None if ck.band_mean is None else ck.band_mean.tolist(),
                       "band_std": None if ck.band_std is None else ck.band_std.tolist()},
    )
