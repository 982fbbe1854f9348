"""The ``geolesf-wsss/1`` checkpoint: a CAM / USAGE / single-stage model and how to apply it.

A plain dict of tensors and primitives (``torch.load(weights_only=True)``): method, model
arguments, state dict, class layout (names, ids in the dataset's files, colours, whether index 0
is a background class), input normalisation, and the seed settings (background threshold,
scales, flip, uncertainty margin, pooling) used by ``geolesf evaluate`` and ``geolesf pseudo-label``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from geolesf import __version__
from geolesf.errors import ModelError
from geolesf.registry import create_model, read_checkpoint, write_checkpoint

FORMAT = "geolesf-wsss/1"
METHODS = ("cam", "usage", "single-stage")


@dataclass
class WSSSBundle:
    method: str
    model: nn.Module
    model_args: dict[str, Any]
    class_names: list[str]
    class_ids: list[int]
    colors: list[str]
    background: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    cam: dict[str, Any]
    """bg_threshold, scales, flip, margin, pool."""
    single_stage: dict[str, Any] = field(default_factory=dict)
    """seg_classes, embed_dim, hidden, options (for single-stage checkpoints)."""
    extra: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    path: Path | None = None

    @property
    def cam_net(self) -> Any:
        return self.model.cam if self.method == "single-stage" else self.model

    @property
    def fg_names(self) -> list[str]:
        return self.class_names[1:] if self.background else list(self.class_names)


def build_model(method: str, model_args: dict[str, Any], single_stage: dict[str, Any] | None = None) -> nn.Module:
    """The network of a WSSS method: a :class:`~geolesf.methods.wsss.cam.CAMNet`, or a single-stage model around one."""
    if method not in METHODS:
        raise ModelError(f"wsss method must be one of {', '.join(METHODS)}, found '{method}'")
    net = create_model("cam", **model_args)
    if method != "single-stage":
        return net
    from geolesf.methods.wsss.single_stage import SingleStageWSSS

    ss = single_stage or {}
    return SingleStageWSSS(net, int(ss["seg_classes"]), embed_dim=int(ss.get("embed_dim", 64)),
                           hidden=int(ss.get("hidden", 128)))


def save(path: str | Path, b: WSSSBundle) -> str:
    """Write the bundle as a ``geolesf-wsss/1`` checkpoint at ``path`` (atomically); returns its sha256."""
    payload = {
        "format": FORMAT,
        "geolesf_version": __version__,
        "model_name": "cam",
        "method": b.method,
        "model_args": dict(b.model_args),
        "state_dict": {k: v.detach().cpu() for k, v in b.model.state_dict().items()},
        "class_names": list(b.class_names),
        "class_ids": [int(c) for c in b.class_ids],
        "colors": list(b.colors),
        "background": bool(b.background),
        "mean": [float(v) for v in b.mean],
        "std": [float(v) for v in b.std],
        "cam": dict(b.cam),
        "single_stage": dict(b.single_stage),
        "extra": dict(b.extra),
    }
    return write_checkpoint(path, payload)


def load(spec: str | Path) -> WSSSBundle:
    """The :class:`WSSSBundle` of a ``geolesf-wsss/1`` checkpoint file or ``MODEL:TAG`` (model in eval mode)."""
    payload, digest, path = read_checkpoint(spec)
    if payload.get("format") != FORMAT:
        raise ModelError(f"{path}: expected a {FORMAT} checkpoint, found format '{payload.get('format')}'")
    try:  # a malformed payload (keys missing, values of the wrong type) is one line naming the file
        model = build_model(payload["method"], payload["model_args"], payload.get("single_stage"))
        try:
            model.load_state_dict(payload["state_dict"])
        except RuntimeError as exc:
            raise ModelError(f"{path}: weights do not fit the model ({str(exc).splitlines()[0]})") from None
        model.eval()
        net = model.cam if payload["method"] == "single-stage" else model
        net.pool = payload["cam"].get("pool", "gap")
        return WSSSBundle(
            method=payload["method"], model=model, model_args=payload["model_args"],
            class_names=list(payload["class_names"]), class_ids=list(payload["class_ids"]),
            colors=list(payload["colors"]), background=bool(payload["background"]),
            mean=tuple(float(v) for v in payload["mean"]), std=tuple(float(v) for v in payload["std"]), cam=dict(payload["cam"]), single_stage=dict(payload.get("single_stage") or {}),
            extra=dict(payload.get("extra") or {}), sha256=digest, path=path,
        )
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise ModelError(f"{path}: malformed checkpoint ({exc.__class__.__name__}: {str(exc)[:200]})") from None
