"""The SAM PEFT checkpoint (``geolesf-sam-peft/1``) and the fold-back to a dense SAM state dict.

A PEFT checkpoint stores **only the trainable tensors** (singular values, adapters / LoRA factors,
relation matrix, quaternion weights, the band stem and — when trained — the mask decoder) plus the
sha256 of the base SAM checkpoint they were trained on. Loading rebuilds SAM from that base file
(found at the recorded path or given explicitly), refuses a base whose sha256 differs
(:class:`~geolesf.errors.ChecksumError`) and loads the tensors on top.

:func:`dense_sam_state_dict` folds the PEFT parameters back into SAM's own layers — SVD layers into
``U diag(s) Vᵀ``, LoRA (with or without orchestration) into the fused ``qkv`` weight — so the result
loads into the unmodified ``segment_anything`` model. Adapters (a non-linear branch beside the MLP)
cannot be folded into the plain architecture and are refused with a clear error. The band stem is
not part of SAM and is not folded (the dense SAM takes 3-band input).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from geolesf import __version__
from geolesf.errors import ConfigError, ModelError
from geolesf.registry import write_checkpoint

FORMAT = "geolesf-sam-peft/1"


def save(path: str | Path, model: Any, *, model_name: str, model_args: dict[str, Any],
                         base_checkpoint: str | Path, band_lo: np.ndarray, band_hi: np.ndarray,
                         class_ids: list[int], class_names: list[str], colors: list[Any],
                         extra: dict[str, Any] | None = None) -> str:
    """Write the trainable tensors + base sha256 atomically; returns the file's sha256."""
    if not model.base_sha256:
        raise ModelError("the SAM model was built without a base checkpoint; a PEFT checkpoint needs one")
    args = {k: v for k, v in model_args.items() if k not in ("checkpoint", "checkpoint_sha256")}
    payload = {
        "format": FORMAT,
        "geolesf_version": __version__,
        "model_name": model_name,
        "model_args": args,
        "mode": model.mode,
        "base_checkpoint": (str(base_checkpoint) if str(base_checkpoint).startswith("weights:")  # catalogued
                            else str(Path(base_checkpoint).expanduser().resolve())),
        "base_sha256": model.base_sha256,
        "trainable": model.trainable_state_dict(),
        "band_lo": torch.from_numpy(np.asarray(band_lo, dtype=np.float32)),
        "band_hi": torch.from_numpy(np.asarray(band_hi, dtype=np.float32)),
        "class_ids": [int(c) for c in class_ids],
        "class_names": [str(n) for n in class_names],
        "colors": [str(c) if isinstance(c, str) else "#%02x%02x%02x" % tuple(int(v) for v in tuple(c)[:3])
                   for c in colors],
        "extra": dict(extra or {}),
    }
    return write_checkpoint(path, payload)


def read_peft_payload(checkpoint: str | Path) -> tuple[dict[str, Any], str, Path]:
    from geolesf.registry import read_checkpoint

    payload, digest, path = read_checkpoint(checkpoint)
    if payload.get("format") != FORMAT:
        raise ModelError(f"{path}: expected a '{FORMAT}' checkpoint, found '{payload.get('format', 'unknown')}'")
    return payload, digest, path


def load(checkpoint: str | Path, base_checkpoint: str | Path | None = None,
                    model_name: str | None = None) -> tuple[Any, dict[str, Any], str]:
    """Rebuild the fine-tuned model: ``(SamSegmenter in eval mode, payload, checkpoint sha256)``.

    ``base_checkpoint`` overrides the SAM file recorded at training time (same sha256 required).
    """
    payload, digest, path = read_peft_payload(checkpoint)
    try:
        return _rebuild(payload, digest, path, base_checkpoint, model_name)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise ModelError(f"{path}: malformed checkpoint ({exc.__class__.__name__}: {str(exc)[:200]})") from None


def _rebuild(payload: dict[str, Any], digest: str, path: Path, base_checkpoint: str | Path | None,
             model_name: str | None) -> tuple[Any, dict[str, Any], str]:
    from geolesf.registry import create_model

    if model_name is not None and model_name != payload["model_name"]:
        raise ModelError(f"{path} holds a '{payload['model_name']}' model, not '{model_name}'")
    from geolesf.data.weights import resolve_spec

    base = Path(resolve_spec(base_checkpoint or payload["base_checkpoint"], None, "base_checkpoint")[0])
    if not base.is_file():
        raise ModelError(f"{path}: base SAM checkpoint {base} not found; pass it with "
                         "--option base_checkpoint=PATH (sha256 must be " + payload["base_sha256"][:16] + "…)")
    model = create_model(payload["model_name"], checkpoint=str(base), checkpoint_sha256=payload["base_sha256"],
                         **payload["model_args"])
    trainable = payload["trainable"]
    missing, unexpected = model.load_state_dict(trainable, strict=False)
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    absent = sorted(expected - set(trainable))
    if unexpected or absent:
        raise ModelError(f"{path}: PEFT tensors do not match model '{payload['model_name']}' "
                         f"(unexpected {list(unexpected)[:2]}, absent {absent[:2]})")
    model.eval()
    return model, payload, digest


def dense_sam_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """A state dict of plain ``segment_anything`` SAM with the PEFT parameters folded in."""
    from geolesf.peft.cross_block import CrossBlockAdapter, fold_lora_state_dict
    from geolesf.peft.svd_coeff import parser_to_dense

    sam = model.sam if hasattr(model, "sam") else model
    if any(isinstance(m, CrossBlockAdapter) for m in sam.modules()):
        raise ModelError("adapter-hosted PEFT adds a non-linear branch beside each MLP and cannot be folded into "
                         "the plain SAM architecture; use the PEFT checkpoint with geolesf, or a LoRA host / PARSER")
    state = fold_lora_state_dict(sam)
    return parser_to_dense(state)


def fold_peft_checkpoint(checkpoint: str | Path, out: str | Path, base_checkpoint: str | Path | None = None) -> str:
    """Write the dense SAM state dict of a PEFT checkpoint as an official-format ``.pth``; returns sha256."""
    model, payload, _ = load(checkpoint, base_checkpoint)
    if payload["mode"] != "prompt":
        n = model.sam.mask_decoder.num_multimask_outputs
        print(f"note: semantic head — load with segment_anything's MaskDecoder(num_multimask_outputs={n})")
    out = Path(out)
    if out.suffix not in (".pth", ".pt"):
        raise ConfigError(f"{out}: expected a .pth output path")
    return write_checkpoint(out, dense_sam_state_dict(model))


#: the :mod:`geolesf.formats` protocol names of this format's writer and reader.
