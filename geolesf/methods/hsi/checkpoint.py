"""The ``geolesf-hsi-patch/1`` checkpoint of patch models (S²Mamba): save, load into a typed bundle.

A checkpoint (``model.pt``) is a plain dictionary of tensors and primitives, loadable with
``torch.load(..., weights_only=True)``: state dict, model name and constructor arguments, band
statistics (and PCA) used to normalise the input, class ids / names / colours and the patch
geometry. Lightning's own ``last.ckpt`` is kept beside it in a run folder for ``--resume``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geolesf.errors import ModelError
from geolesf.io.bands import RecordedBands
from geolesf.registry import float_tensor, model_payload, rebuild_model, write_checkpoint

FORMAT = "geolesf-hsi-patch/1"
#: Every format the ``hsi`` method reads: patch models here, scikit-learn spectrum models in
#: :mod:`geolesf.methods.hsi.spectrum`.
FORMATS = (FORMAT, "geolesf-hsi-spectrum/1")


@dataclass
class PatchCheckpoint(RecordedBands):
    """Everything needed to apply a trained patch model to a new cube."""

    model: nn.Module
    model_name: str
    model_args: dict[str, Any]
    patch_size: int
    padding: str
    band_mean: np.ndarray | None
    band_std: np.ndarray | None
    pca_components: np.ndarray | None
    pca_mean: np.ndarray | None
    class_ids: list[int]
    class_names: list[str]
    colors: list[list[int]]
    """RGB triple per class index."""
    extra: dict[str, Any]
    path: Path | None = None
    sha256: str | None = None

    @property
    def in_bands(self) -> int:
        return int(self.band_mean.shape[0]) if self.band_mean is not None else int(self.model_args["in_chans"])

    def normalise(self, cube: np.ndarray) -> np.ndarray:
        """Apply the training-time band statistics (and PCA) to a raw cube ``(H, W, bands)``."""
        x = np.asarray(cube, dtype=np.float32)
        if self.band_mean is not None:
            # float32 out, a few rows at a time: the float64 temporaries of the z-score stay small (the
            # values equal the training features, ((x - mean) / std).astype(float32))
            out = np.empty(x.shape, dtype=np.float32)
            for i in range(0, x.shape[0], 8):
                out[i:i + 8] = (x[i:i + 8] - self.band_mean) / self.band_std
            x = out
        if self.pca_components is not None:
            h, w, b = x.shape
            x = ((x.reshape(-1, b) - self.pca_mean) @ self.pca_components.T).reshape(h, w, -1).astype(np.float32)
        return x


def save(path: str | Path, ckpt: PatchCheckpoint) -> str:
    """Write a ``weights_only``-loadable checkpoint atomically; returns its sha256."""

    payload = {
        **model_payload(FORMAT, ckpt.model_name, ckpt.model_args, ckpt.model),
        "patch_size": int(ckpt.patch_size),
        "padding": ckpt.padding,
        "band_mean": float_tensor(ckpt.band_mean),
        "band_std": float_tensor(ckpt.band_std),
        "pca_components": float_tensor(ckpt.pca_components),
        "pca_mean": float_tensor(ckpt.pca_mean),
        "class_ids": [int(c) for c in ckpt.class_ids],
        "class_names": list(ckpt.class_names),
        "colors": list(ckpt.colors),
        "extra": dict(ckpt.extra),
    }
    return write_checkpoint(path, payload)


def load(path: str | Path, expected_sha256: str | None = None) -> PatchCheckpoint:
    """Load a geolesf patch checkpoint (``weights_only=True``) and rebuild its model.

    ``path`` may also be ``MODEL:TAG`` of a registered pretrained checkpoint (sha256 verified).
    """
    from geolesf.registry import read_checkpoint

    payload, digest, path = read_checkpoint(path)
    if expected_sha256 is not None and digest != expected_sha256:
        from geolesf.errors import ChecksumError

        raise ChecksumError(f"{path}: sha256 mismatch, expected {expected_sha256[:16]}…, found {digest[:16]}…")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        if isinstance(payload, dict) and "state_dict" in payload and "hyper_parameters" in payload:
            raise ModelError(f"{path}: this is a Lightning training checkpoint; use model.pt from the run folder")
        raise ModelError(f"{path}: expected a geolesf '{FORMAT}' checkpoint")
    model = rebuild_model(payload, path)

    def arr(t: torch.Tensor | None) -> np.ndarray | None:
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"expected a tensor or None, found {type(t).__name__}")
        return None if t is None else t.numpy()

    try:
        ckpt = PatchCheckpoint(
            model=model,
            model_name=payload["model_name"],
            model_args=payload["model_args"],
            patch_size=payload["patch_size"],
            padding=payload["padding"],
            band_mean=arr(payload["band_mean"]),
            band_std=arr(payload["band_std"]),
            pca_components=arr(payload["pca_components"]),
            pca_mean=arr(payload["pca_mean"]),
            class_ids=[int(c) for c in payload["class_ids"]],
            class_names=[str(n) for n in payload["class_names"]],
            colors=list(payload["colors"]),
            extra=payload["extra"],
            path=path,
            sha256=digest,
        )
        if any(a is not None and a.ndim != 1 for a in (ckpt.band_mean, ckpt.band_std)):
            raise ValueError("band statistics must be 1-D")
    except (KeyError, TypeError, ValueError) as exc:  # a key missing or of the wrong type
        raise ModelError(f"{path}: malformed '{FORMAT}' checkpoint ({exc.__class__.__name__}: {exc})") from None
    return ckpt


def load_any(path: str | Path) -> Any:
    """A patch checkpoint, or a :class:`~geolesf.methods.hsi.spectrum.SpectrumCheckpoint` (which has
    the attributes the predictors and the evaluator read) for a ``geolesf-hsi-spectrum/1`` file."""
    from geolesf.formats import checkpoint_format

    if checkpoint_format(path) == FORMATS[1]:
        from geolesf.methods.hsi.spectrum import load as load_spectrum

        return load_spectrum(path)
    return load(path)
