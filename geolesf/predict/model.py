"""What the predictors need to know about a model: :class:`PredictModel`, and how to get one.

A :class:`PredictModel` is an ``nn.Module`` plus its *kind* (``dense``: ``(B, bands, H, W) → (B, C,
H, W)``; ``pixel``: ``(B, bands, P, P) → (B, C)``), class ids/names/colours, weight sha256, input
normalisation and geometry. :func:`load_predict_model` turns any geolesf checkpoint into one
through the method that owns its format (:mod:`geolesf.formats`); :func:`as_predict_model` also
accepts a bare module. Nothing here imports a method's training code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geolesf.errors import ConfigError, ModelError

KINDS = ("dense", "pixel")


@dataclass
class PredictModel:
    """A model plus what the predictor needs to know about it."""

    module: nn.Module
    name: str
    kind: str
    """``dense`` (B, bands, H, W) → (B, C, H, W), or ``pixel`` (B, bands, P, P) → (B, C)."""
    class_ids: list[int]
    class_names: list[str]
    colors: list[Any]
    sha256: str
    in_bands: int | None = None
    normalise: Callable[[np.ndarray], np.ndarray] | None = None
    """``(bands, h, w)`` raw → ``(bands', h, w)`` float32 model input."""
    patch_size: int = 1
    padding: str = "symmetric"
    size_divisor: int = 1
    normalisation: dict[str, Any] | None = None
    """The parameters of ``normalise`` as plain data (JSON-able), for exporters that must reproduce it
    (:mod:`geolesf.export.onnx`; the record is read back by :func:`geolesf.predict.onnx_engine.normaliser`).
    ``None`` with a ``normalise``: not exportable."""


def state_dict_sha256(module: nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in module.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_predict_model(
    checkpoint: str | Path, model_name: str | None = None, options: dict[str, Any] | None = None
) -> PredictModel:
    """Load a geolesf checkpoint for prediction: its ``format`` names the method whose
    ``inference.predict_model`` builds the :class:`PredictModel` (see :mod:`geolesf.formats`).

    ``options`` go to that method (e.g. the class names of an open-vocabulary model).
    """
    from geolesf import formats

    fmt = formats.checkpoint_format(checkpoint)
    return formats.inference(fmt, checkpoint).predict_model(checkpoint, model_name, dict(options or {}))


def check_model_name(checkpoint: Any, found: str | None, wanted: str | None) -> None:
    """A :class:`ModelError` when ``--model`` names another model than the checkpoint holds."""
    if wanted is not None and found is not None and wanted != found:
        raise ModelError(f"{checkpoint} holds a '{found}' model, not '{wanted}'")


def as_predict_model(
    model: Any,
    *,
    class_names: Sequence[str] | None = None,
    colors: Sequence[Any] | None = None,
    kind: str = "dense",
    name: str | None = None,
) -> PredictModel:
    """Accept a :class:`PredictModel`, a checkpoint path or a bare ``nn.Module`` (dense by default)."""
    from geolesf.colors import default_palette

    if isinstance(model, PredictModel):
        pm = model
    elif isinstance(model, (str, Path)):
        pm = load_predict_model(model)
    elif isinstance(model, nn.Module):
        if kind not in ("dense", "pixel"):
            raise ConfigError(f"kind must be 'dense' or 'pixel', found '{kind}'")
        model.eval()
        pm = PredictModel(
            module=model, name=name or type(model).__name__, kind=kind, class_ids=[], class_names=[],
            colors=[], sha256=state_dict_sha256(model), in_bands=getattr(model, "in_chans", None),
            patch_size=int(getattr(model, "patch_size", 1)),
            size_divisor=int(getattr(model, "size_divisor", 1)),
        )
    else:
        raise ModelError(f"cannot predict with a {type(model).__name__}: give an nn.Module or a checkpoint path")
    if class_names is not None:
        pm.class_names = [str(n) for n in class_names]
        if not pm.class_ids or len(pm.class_ids) != len(pm.class_names):
            pm.class_ids = list(range(len(pm.class_names)))
    if colors is not None:
        pm.colors = list(colors)
    if not pm.class_ids:
        pm.class_ids = list(range(_infer_classes(pm)))
    if not pm.class_names:
        pm.class_names = [f"class {i}" for i in pm.class_ids]
    if len(pm.colors) != len(pm.class_ids):
        pm.colors = list(default_palette(len(pm.class_ids)))
    return pm


def _infer_classes(pm: PredictModel) -> int:
    bands = pm.in_bands or 3
    size = pm.patch_size if pm.kind == "pixel" else max(16, pm.size_divisor)
    param = next(pm.module.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    with torch.inference_mode():
        y = pm.module(torch.zeros(1, bands, size, size, device=device))
    return int(y.shape[1])
