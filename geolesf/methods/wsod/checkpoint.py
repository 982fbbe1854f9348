"""The ``geolesf-wsod/1`` checkpoint (``ndi.pt``) of weakly-supervised detectors: save and load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geolesf import __version__
from geolesf.errors import ModelError
from geolesf.registry import create_model, read_checkpoint, write_checkpoint

FORMAT = "geolesf-wsod/1"


def save(path: Path, model: Any, cfg: Any, class_names: list[str],
                         extra: dict[str, Any] | None = None) -> str:
    """Write ``ndi.pt`` (format ``geolesf-wsod/1``) atomically; returns its sha256."""
    d, tr = cfg.data, cfg.trainer
    payload = {
        "format": FORMAT,
        "geolesf_version": __version__,
        "model_name": cfg.model.name,
        "model_args": {**cfg.model.args, "num_classes": len(class_names)},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "class_names": list(class_names),
        "dataset": d.dataset,
        "proposals": {"source": d.proposals if d.proposals == "selective_search" else "file",
                      "mode": d.proposal_mode, "max_side": d.proposal_max_side,
                      "max_proposals": d.max_proposals, "min_size": d.min_proposal_size},
        "test": {"scales": list(tr.test_scales), "max_size": d.max_size, "flip": tr.test_flip, "nms": tr.nms},
        "extra": dict(extra or {}),
    }
    return write_checkpoint(path, payload)


def load(checkpoint: str | Path, device: str = "cpu") -> tuple[Any, dict[str, Any], str]:
    """``(model in eval mode, payload, sha256)`` of an ``ndi.pt``."""
    payload, digest, path = read_checkpoint(checkpoint)
    if payload.get("format") != FORMAT:
        raise ModelError(f"{path}: expected a '{FORMAT}' checkpoint, found '{payload.get('format')}'")
    try:
        model = create_model(payload["model_name"], **payload["model_args"])
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise ModelError(f"{path}: malformed checkpoint ({exc.__class__.__name__}: {str(exc)[:200]})") from None
    return model.to(device).eval(), payload, digest
