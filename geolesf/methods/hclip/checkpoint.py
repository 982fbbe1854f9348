"""The ``geolesf-hclip/1`` checkpoint: the trained PEFT and head tensors, and the frozen CLIP only when
no CLIP file was given (a CLIP checkpoint path is stored with its sha256 and re-verified on load)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geolesf import __version__
from geolesf.errors import ModelError
from geolesf.registry import create_model, read_checkpoint, write_checkpoint

FORMAT = "geolesf-hclip/1"


def save(path: str | Path, model: Any, model_args: dict[str, Any], class_names: list[str],
                          extra: dict[str, Any] | None = None) -> str:
    frozen = set(model.frozen_keys())
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    args = dict(model_args)
    args["clip_sha256"] = model.clip_info.get("sha256") or args.get("clip_sha256")
    payload = {
        "format": FORMAT, "geolesf_version": __version__, "model_name": "hclip", "model_args": args,
        "state_dict": {k: v for k, v in state.items() if k not in frozen},
        "clip_state": {k: v for k, v in state.items() if k in frozen} if not args.get("clip_checkpoint") else None,
        "class_names": list(class_names), "parameters": model.parameter_report(), "extra": dict(extra or {}),
    }
    return write_checkpoint(path, payload)


def load(checkpoint: str | Path) -> tuple[Any, dict[str, Any], str]:
    """``(model in eval mode, payload, sha256)``; the CLIP weight file is re-verified by its sha256."""
    payload, digest, path = read_checkpoint(checkpoint)
    if payload.get("format") != FORMAT:
        raise ModelError(f"{path}: expected a '{FORMAT}' checkpoint, found '{payload.get('format')}'")
    try:
        model = create_model("hclip", **payload["model_args"])
        state = dict(payload["state_dict"])
        if payload.get("clip_state"):
            state.update(payload["clip_state"])
        missing, unexpected = model.load_state_dict(state, strict=False)
        frozen = set(model.frozen_keys())
        missing = [k for k in missing if not (k in frozen and not payload.get("clip_state"))]
        if missing or unexpected:
            raise ModelError(f"{path}: state dict does not match hclip (missing {missing[:3]}, unexpected "
                             f"{list(unexpected)[:3]})")
        model.set_classes(payload.get("class_names") or ["object"])
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise ModelError(f"{path}: malformed checkpoint ({exc.__class__.__name__}: {str(exc)[:200]})") from None
    model.eval()
    payload["_path"] = str(path)
    return model, payload, digest
