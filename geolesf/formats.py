"""Checkpoint formats and config tasks → the method package that owns them (imported lazily).

Every geolesf checkpoint is a dictionary with a ``format`` string; every training config has a
top-level ``task:`` key (the name users already write in their YAML; it selects a method). Both
lead to one package under :mod:`geolesf.methods`, and nothing is imported until it is used, so
``geolesf predict`` with an S²Mamba checkpoint never loads SAM, CLIP or Lightning.

What a method package provides (``tests/test_formats.py`` checks every entry):

- ``checkpoint.FORMAT`` (equal to its key here), ``checkpoint.save`` and ``checkpoint.load`` (a
  typed bundle);
- ``inference.predict_model(checkpoint, model_name, options) -> PredictModel`` for a class raster
  written by the tiled predictor, and/or ``inference.run(request: PredictRequest) -> int`` when
  ``geolesf predict`` writes something else (boxes to a GeoPackage, prompted masks);
- ``evaluate.evaluate(request: EvaluateRequest) -> dict`` (metrics; ``summary`` is printed and
  ``written_to`` names the JSON);
- ``train.CONFIG`` (the config dataclass) and ``train.run_config(cfg) -> Path`` (the run folder).

``checkpoint`` and ``inference`` never import Lightning or the method's ``train`` module; a
test reads the imports to hold that.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from geolesf.errors import ConfigError, ModelError

#: checkpoint format → method package (under ``geolesf.methods``).
FORMATS: dict[str, str] = {
    "geolesf-hsi-patch/1": "hsi",
    "geolesf-hsi-spectrum/1": "hsi",
    "geolesf-segmentation/1": "unet",
    "geolesf-sam-peft/1": "sam",
    "geolesf-hclip/1": "hclip",
    "geolesf-wsss/1": "wsss",
    "geolesf-wsod/1": "wsod",
}

#: a config's ``task:`` value → method package.
TASKS: dict[str, str] = {
    "hsi": "hsi",
    "segmentation": "unet",
    "sam-peft": "sam",
    "hclip": "hclip",
    "wsss": "wsss",
    "wsod": "wsod",
}

METHODS: tuple[str, ...] = tuple(dict.fromkeys(FORMATS.values()))


@dataclass(frozen=True, kw_only=True)
class _Request:
    """What every ``geolesf predict`` / ``evaluate`` run names."""

    checkpoint: str
    out: str | None = None
    device: str = "cpu"
    batch_size: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class PredictRequest(_Request):
    """One ``geolesf predict`` run of one scene, as a method's ``inference.run`` receives it."""

    scene: str
    model_name: str | None = None
    tile: int | str | None = None
    """Pixels, or ``"auto"`` (:mod:`geolesf.predict.autotile`)."""
    overlap: int | None = None
    blend: str | None = None
    memory_budget: int | None = None
    """Bytes for ``tile="auto"`` (None: the default share of the available memory)."""
    memory_format: str | None = None
    probabilities: str | None = None
    probabilities_uint8: bool = False
    nodata: float | None = None
    resume: bool = False
    preview: bool = True
    engine: str = "torch"
    """``torch`` (the checkpoint's method) or ``onnxruntime`` (a .onnx from ``geolesf export-model``)."""

    def tiling(self) -> dict[str, Any]:
        """The tiling options the user gave (the predictor's defaults fill in the rest)."""
        keys = ("tile", "overlap", "blend", "memory_budget", "memory_format")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


@dataclass(frozen=True, kw_only=True)
class EvaluateRequest(_Request):
    """One ``geolesf evaluate`` run, as a method's ``evaluate.evaluate`` receives it: a benchmark
    (``dataset``, ``data_root``, ``what``) or, for hyperspectral checkpoints, a split (``config``,
    ``overrides``, ``cube``, ``labels``, ``split``)."""

    dataset: str | None = None
    data_root: str | None = None
    what: str | None = None
    config: str | None = None
    overrides: tuple[str, ...] = ()
    cube: str | None = None
    labels: str | None = None
    split: str | None = None

    def benchmark_args(self) -> dict[str, Any]:
        """The keyword arguments of the benchmark evaluators (dataset, root, stage, options...)."""
        return {"dataset": self.dataset, "data_root": self.data_root, "what": self.what, "out": self.out,
                "device": self.device, "batch_size": self.batch_size, "options": dict(self.options)}


def method_module(method: str, part: str) -> ModuleType:
    """``geolesf.methods.<method>.<part>``, imported now."""
    return importlib.import_module(f"geolesf.methods.{method}.{part}")


def method_of(fmt: Any, checkpoint: Any) -> str:
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise ModelError(f"{checkpoint}: not a checkpoint geolesf can use (format '{fmt}'; "
                         f"known: {', '.join(sorted(FORMATS))})")
    return FORMATS[fmt]


def inference(fmt: str | None, checkpoint: Any) -> ModuleType:
    """The ``inference`` module of the method owning ``fmt``."""
    return method_module(method_of(fmt, checkpoint), "inference")


def evaluator(fmt: str | None, checkpoint: Any) -> ModuleType:
    """The ``evaluate`` module of the method owning ``fmt``."""
    return method_module(method_of(fmt, checkpoint), "evaluate")


def task_module(task: str) -> ModuleType:
    """The ``train`` module of the method a config's ``task:`` selects."""
    if task not in TASKS:
        close = difflib.get_close_matches(task, list(TASKS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"task: unknown task '{task}'{hint} (tasks: {', '.join(sorted(TASKS))})")
    return method_module(TASKS[task], "train")


def checkpoint_format(checkpoint: Any) -> str | None:
    """The ``format`` string of a checkpoint file or ``MODEL:TAG``, for routing only.

    The file is memory-mapped, not read or hashed: the loader the format routes to reads and
    verifies it once (a SAM or CLIP checkpoint is hundreds of MB).
    """
    import torch

    from geolesf.registry import _resolve_checkpoint, read_checkpoint

    path, _ = _resolve_checkpoint(checkpoint)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # not the zip format torch.save writes: no memory map, read it whole
        payload, _, _ = read_checkpoint(path)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise ModelError(f"{path}: not a readable geolesf checkpoint ({exc.__class__.__name__})") from None
    return payload.get("format") if isinstance(payload, dict) else None
