"""Inference of ``geolesf-hclip/1`` checkpoints: the tiled predictor's dense model over any class list."""

from __future__ import annotations

from typing import Any

import numpy as np

from geolesf.errors import ConfigError, DataError, ModelError
from geolesf.methods.hclip.checkpoint import load as load_hclip_checkpoint


def predict_model(checkpoint: Any, model_name: str | None, options: dict[str, Any]) -> Any:
    """A dense PredictModel: ``options['classes']`` names the classes written to the GeoTIFF."""
    from geolesf.colors import default_palette
    from geolesf.predict.model import PredictModel

    if model_name not in (None, "hclip"):
        raise ModelError(f"{checkpoint} holds an 'hclip' model, not '{model_name}'")
    opts = dict(options)
    model, payload, digest = load_hclip_checkpoint(checkpoint)
    names = opts.pop("classes", None) or payload.get("class_names")
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        raise ConfigError("--classes: hclip needs class names, e.g. --classes \"building,road,tree,water\"")
    if "templates" in opts:
        from geolesf.methods.hclip.prompts import get_templates

        templates = get_templates(opts.pop("templates"))
        if len(templates) != len(model.templates):
            raise ConfigError(f"--option templates: the head was trained with {len(model.templates)} template(s), "
                              f"found {len(templates)}")
        model.templates = templates
    if opts:
        raise ConfigError(f"--option: unknown key(s) {sorted(opts)} for hclip (classes, templates)")
    model.set_classes([str(n) for n in names])
    mean = np.asarray(model.clip_info["mean"], dtype=np.float32)[:, None, None]
    std = np.asarray(model.clip_info["std"], dtype=np.float32)[:, None, None]

    def normalise(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.shape[0] != 3:
            raise DataError(f"hclip expects 3-band RGB scenes, found {x.shape[0]} bands")
        return ((x / 255.0 - mean) / std).astype(np.float32)

    return PredictModel(module=model.eval(), name="hclip", kind="dense", class_ids=list(range(len(names))),
                        class_names=list(model.class_names), colors=list(default_palette(len(names))), sha256=digest,
                        in_bands=3, normalise=normalise, size_divisor=model.patch_size)
