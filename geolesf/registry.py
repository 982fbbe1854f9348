"""Model registry: ``register_model`` / ``create_model`` / ``list_models``.

Model constructors register themselves with a decorator (the timm pattern)::

    @register_model("s2mamba", method="hsi", kind="pixel", pretrained=[PretrainedCfg(...)])
    def s2mamba(in_chans: int, num_classes: int, **kwargs) -> nn.Module: ...

A :class:`PretrainedCfg` records where weights come from (file name, optional URL),
their sha256, the input bands, class names and licence. :func:`load_pretrained`
verifies the sha256 *before* ``torch.load(..., weights_only=True)`` and refuses a
mismatch with :class:`~geolesf.errors.ChecksumError`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geolesf.errors import ChecksumError, ModelError
from geolesf.paths import embedded_data_root, weights_home

# Built-in model name → the module whose import registers it. ``create_model(name)`` imports only
# that module (loading SAM or CLIP code costs seconds that an S²Mamba prediction should not pay);
# ``list_models`` and an unknown name import them all. A test checks this table against the
# decorators.
BUILTIN_MODELS = {
    "rf": "geolesf.methods.hsi.baselines",
    "svm": "geolesf.methods.hsi.baselines",
    "s2mamba": "geolesf.methods.hsi.s2mamba",
    "unet": "geolesf.methods.unet.model",
    "hclip": "geolesf.methods.hclip.model",
    "cam": "geolesf.methods.wsss.cam",
    "sam-parser": "geolesf.methods.sam.model",
    "sam-cobo": "geolesf.methods.sam.model",
    "sam-lora": "geolesf.methods.sam.model",
    "sam-adapter": "geolesf.methods.sam.model",
    "ndi-wsod": "geolesf.methods.wsod.detector",
}
BUILTIN_MODEL_MODULES = tuple(dict.fromkeys(BUILTIN_MODELS.values()))


@dataclass(frozen=True)
class PretrainedCfg:
    """Provenance and contract of one set of weights."""

    tag: str
    file: str
    sha256: str
    bands: int | None = None
    class_names: tuple[str, ...] = ()
    licence: str = "unknown"
    url: str | None = None
    description: str = ""
    trained_with: str = ""
    """The geolesf command that produced the weights, for self-trained checkpoints."""
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class ModelEntry:
    name: str
    fn: Callable[..., Any]
    method: str
    """The package under :mod:`geolesf.methods` that trains and loads the model."""
    kind: str
    """What the model maps to: ``spectrum`` (a pixel's bands → class), ``pixel`` (a ``P×P`` patch →
    class), ``dense`` (an image → per-pixel logits), ``prompted`` (an image and prompts → masks) or
    ``boxes`` (an image and proposals → scored boxes)."""
    description: str
    pretrained: dict[str, PretrainedCfg] = field(default_factory=dict)


_REGISTRY: dict[str, ModelEntry] = {}
_BUILTINS_LOADED = False


def register_model(
    name: str,
    *,
    method: str = "",
    kind: str = "",
    pretrained: list[PretrainedCfg] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a model constructor under ``name``."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ModelError(f"model '{name}' is already registered by {_REGISTRY[name].fn.__module__}")
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = ModelEntry(
            name=name,
            fn=fn,
            method=method,
            kind=kind,
            description=doc[0] if doc else "",
            pretrained={p.tag: p for p in pretrained or []},
        )
        return fn

    return decorator


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        for module in BUILTIN_MODEL_MODULES:
            importlib.import_module(module)


def get_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY and name in BUILTIN_MODELS:
        importlib.import_module(BUILTIN_MODELS[name])
    if name not in _REGISTRY:
        _load_builtins()
    if name not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ModelError(
            f"unknown model '{name}'{hint} (available: {', '.join(sorted(_REGISTRY))})"
        )
    return _REGISTRY[name]


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``."""
    _load_builtins()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def create_model(name: str, **kwargs: Any) -> Any:
    """Build model ``name`` with constructor arguments ``kwargs``."""
    entry = get_entry(name)
    try:
        return entry.fn(**kwargs)
    except TypeError as exc:
        raise ModelError(f"model '{name}': bad arguments ({exc})") from None


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def resolve_weights(cfg: PretrainedCfg, path: str | Path | None = None) -> Path:
    """Find the weights file: an explicit path, then GEOLESF_HOME/weights, then the package."""
    candidates = [Path(path)] if path else [weights_home() / cfg.file, embedded_data_root() / "weights" / cfg.file]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    where = ", ".join(str(c) for c in candidates)
    raise ModelError(f"weights '{cfg.file}' for tag '{cfg.tag}' not found (looked in {where})")


def verify_sha256(path: str | Path, expected: str | None) -> str:
    """sha256 of ``path``; a :class:`ChecksumError` when ``expected`` is given and differs."""
    found = sha256_file(path)
    if expected and found != expected.lower():
        raise ChecksumError(
            f"{path}: sha256 mismatch, expected {expected[:16]}…, found {found[:16]}…; "
            "the file is corrupt or not the published weights"
        )
    return found


def load_pretrained(name: str, tag: str | None = None, path: str | Path | None = None) -> dict[str, Any]:
    """Verify and load the weights of a registered pretrained config.

    Returns the object stored in the checkpoint (loaded with ``weights_only=True``).
    """
    import torch

    entry = get_entry(name)
    if not entry.pretrained:
        raise ModelError(f"model '{name}' has no pretrained weights registered")
    if tag is None:
        tag = next(iter(entry.pretrained))
    if tag not in entry.pretrained:
        raise ModelError(f"model '{name}' has no pretrained tag '{tag}' (have: {', '.join(entry.pretrained)})")
    cfg = entry.pretrained[tag]
    file = resolve_weights(cfg, path)
    verify_sha256(file, cfg.sha256)
    return torch.load(file, map_location="cpu", weights_only=True)


def _resolve_checkpoint(spec: str | Path) -> tuple[Path, str | None]:
    """``(path, sha256 if it was verified on the way)`` for a file or ``MODEL:TAG``."""
    path = Path(spec)
    if path.is_file():
        return path, None
    if path.is_dir():
        raise ModelError(f"{path}: is a folder, expected a checkpoint file (e.g. {path / 'model.pt'})")
    text = str(spec)
    if ":" in text and not path.exists():
        name, tag = text.split(":", 1)
        if name in BUILTIN_MODELS:  # import only that model's module (not SAM and CLIP for S²Mamba)
            importlib.import_module(BUILTIN_MODELS[name])
        else:
            _load_builtins()
        if name in _REGISTRY:
            entry = _REGISTRY[name]
            if tag not in entry.pretrained:
                have = ", ".join(f"{name}:{t}" for t in entry.pretrained) or "none"
                raise ModelError(f"{text}: model '{name}' has no pretrained checkpoint '{tag}' (registered: {have})")
            cfg = entry.pretrained[tag]
            file = resolve_weights(cfg)
            verify_sha256(file, cfg.sha256)
            return file, cfg.sha256
    raise ModelError(f"{text}: checkpoint not found (give a file, or MODEL:TAG of a registered pretrained "
                     "checkpoint, e.g. s2mamba:indian_pines_dase)")


def resolve_checkpoint(spec: str | Path) -> Path:
    """A checkpoint file path, or ``MODEL:TAG`` naming a registered pretrained checkpoint.

    ``MODEL:TAG`` is looked up in the registry, found in ``GEOLESF_HOME/weights`` or the
    package, and its sha256 verified before the path is returned.
    """
    return _resolve_checkpoint(spec)[0]


def read_checkpoint(spec: str | Path) -> tuple[dict[str, Any], str, Path]:
    """``torch.load(weights_only=True)`` of a geolesf checkpoint: ``(payload, sha256, path)``.

    The file is hashed once: a ``MODEL:TAG`` checkpoint reuses the digest it was verified with.
    """
    import torch

    path, digest = _resolve_checkpoint(spec)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise ModelError(f"{path}: not a readable geolesf checkpoint ({exc.__class__.__name__})") from None
    if not isinstance(payload, dict):
        raise ModelError(f"{path}: expected a geolesf checkpoint dictionary")
    return payload, digest or sha256_file(path), path


def write_checkpoint(path: str | Path, payload: dict[str, Any]) -> str:
    """``torch.save`` a checkpoint dictionary atomically (temp file beside, then rename); returns its sha256."""
    import torch

    from geolesf.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return sha256_file(path)


def model_payload(fmt: str, model_name: str, model_args: dict[str, Any], module: Any) -> dict[str, Any]:
    """The entries every model checkpoint starts with: format, version, model name and args, CPU state dict."""
    from geolesf import __version__

    return {
        "format": fmt,
        "geolesf_version": __version__,
        "model_name": model_name,
        "model_args": dict(model_args),
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
    }


def rebuild_model(payload: dict[str, Any], path: Any) -> Any:
    """The registered model of a :func:`model_payload` checkpoint with its weights, in eval mode."""
    try:
        model = create_model(payload["model_name"], **payload["model_args"])
        missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # malformed payload or weights of another shape
        raise ModelError(f"{path}: malformed checkpoint ({exc.__class__.__name__}: {str(exc)[:200]})") from None
    if missing or unexpected:
        raise ModelError(f"{path}: state dict does not match model '{payload['model_name']}' "
                         f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
    return model.eval()


def float_tensor(a: Any) -> Any:
    """A float32 tensor of an array stored in a checkpoint (``None`` stays ``None``)."""
    import numpy as np
    import torch

    return None if a is None else torch.from_numpy(np.asarray(a, dtype=np.float32))
