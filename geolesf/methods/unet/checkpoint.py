"""The ``geolesf-segmentation/1`` checkpoint of dense segmenters (``unet``): save, load into a bundle.

Checkpoints are plain dicts of tensors and primitives, loadable with ``torch.load(weights_only=True)``:
state dict, model name and arguments, per-band mean/std, class ids, names and colours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geolesf.errors import ModelError
from geolesf.registry import float_tensor, model_payload, rebuild_model, write_checkpoint

FORMAT = "geolesf-segmentation/1"


@dataclass
class SegmentationCheckpoint:
    """A dense model plus what is needed to apply it to a new scene."""

    model: nn.Module
    model_name: str
    model_args: dict[str, Any]
    band_mean: np.ndarray | None
    band_std: np.ndarray | None
    class_ids: list[int]
    class_names: list[str]
    colors: list[Any]
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    sha256: str | None = None

    @property
    def in_bands(self) -> int:
        return int(self.model_args.get("in_chans", len(self.band_mean) if self.band_mean is not None else 0))

    def normalise(self, x: np.ndarray) -> np.ndarray:
        """``(bands, h, w)`` raw values → float32 model input."""
        x = np.asarray(x, dtype=np.float32)
        if self.band_mean is not None:
            x = (x - self.band_mean[:, None, None]) / self.band_std[:, None, None]
        return x


def save(path: str | Path, ckpt: SegmentationCheckpoint) -> str:
    """Write a ``weights_only``-loadable checkpoint atomically; returns its sha256."""

    payload = {
        **model_payload(FORMAT, ckpt.model_name, ckpt.model_args, ckpt.model),
        "band_mean": float_tensor(ckpt.band_mean),
        "band_std": float_tensor(ckpt.band_std),
        "class_ids": [int(c) for c in ckpt.class_ids],
        "class_names": [str(n) for n in ckpt.class_names],
        "colors": [_colour_hex(c) for c in ckpt.colors],
        "extra": dict(ckpt.extra),
    }
    return write_checkpoint(path, payload)


def _colour_hex(c: Any) -> str:
    if isinstance(c, str):
        return c
    r, g, b = (int(v) for v in tuple(c)[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def read_checkpoint_payload(path: str | Path) -> tuple[dict[str, Any], str]:
    """``torch.load(weights_only=True)`` with geolesf errors; returns ``(payload, sha256)``."""
    from geolesf.registry import read_checkpoint

    payload, digest, _ = read_checkpoint(path)
    return payload, digest


def load(path: str | Path) -> SegmentationCheckpoint:
    """Load a ``geolesf-segmentation/1`` checkpoint and rebuild its model (eval mode)."""
    payload, digest = read_checkpoint_payload(path)
    if payload.get("format") != FORMAT:
        raise ModelError(f"{path}: expected a '{FORMAT}' checkpoint, found "
                         f"'{payload.get('format', 'unknown')}'")
    model = rebuild_model(payload, path)

    def arr(t: torch.Tensor | None) -> np.ndarray | None:
        if t is not None and (not isinstance(t, torch.Tensor) or t.ndim != 1):
            raise TypeError("band statistics must be 1-D tensors")
        return None if t is None else t.numpy().astype(np.float32)

    try:
        return SegmentationCheckpoint(
            model=model, model_name=payload["model_name"], model_args=payload["model_args"],
            band_mean=arr(payload["band_mean"]), band_std=arr(payload["band_std"]),
            class_ids=list(payload["class_ids"]), class_names=list(payload["class_names"]),
            colors=list(payload["colors"]), extra=dict(payload.get("extra", {})),
            path=Path(path), sha256=digest,
        )
    except (KeyError, TypeError, ValueError) as exc:  # a key missing or of the wrong type
        raise ModelError(f"{path}: malformed '{FORMAT}' checkpoint ({exc.__class__.__name__}: {exc})") from None


# --------------------------------------------------------------------------------------------
# training
