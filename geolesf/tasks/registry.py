"""Which module trains, evaluates and predicts for each kind of run and checkpoint.

``geolesf train --config X.yaml`` reads the top-level ``task:`` key of the YAML (default
``hsi``; ``--set task=...`` also works) and hands the config to that task's module. A task
module defines

- ``CONFIG``: the dataclass filled from the YAML (it has ``task`` and ``out`` fields), and
- ``run_config(cfg) -> Path``: train into the run folder ``cfg.out``; return it.

Checkpoints carry a ``format`` string. ``geolesf evaluate`` and ``geolesf predict`` look the
format up here:

- ``EVALUATORS[format]`` → ``fn(checkpoint, *, dataset, data_root, what, out, device,
  batch_size, options) -> dict`` (metrics; ``summary`` is printed, ``written_to`` names the JSON);
- ``PREDICT_LOADERS[format]`` → ``fn(checkpoint, model_name, options) -> PredictModel`` for models
  whose output is a class raster (the tiled predictor does the rest);
- ``PREDICT_RUNNERS[format]`` → ``fn(args) -> int`` for checkpoints whose prediction is not a
  class raster (boxes to a GeoPackage, prompted masks); it receives the parsed CLI arguments.

Entries are ``"module:function"`` strings so nothing is imported until it is used.
"""

from __future__ import annotations

import importlib
from typing import Any

from geolesf.errors import ConfigError, ModelError

#: task name → module defining ``CONFIG`` and ``run_config``.
TASKS: dict[str, str] = {
    "hsi": "geolesf.tasks.hsi_run",
    "segmentation": "geolesf.tasks.segmentation",
    "sam-peft": "geolesf.tasks.sam_peft",
    "hclip": "geolesf.tasks.hclip",
    "wsss": "geolesf.tasks.wsss",
    "wsod": "geolesf.tasks.wsod",
}

#: checkpoint format → evaluator.
EVALUATORS: dict[str, str] = {
    "geolesf-segmentation/1": "geolesf.tasks.segmentation:evaluate",
}
EVALUATORS["geolesf-hclip/1"] = "geolesf.tasks.hclip_evaluate:evaluate"
EVALUATORS["geolesf-sam-peft/1"] = "geolesf.tasks.sam_peft_predict:evaluate_checkpoint"
EVALUATORS["geolesf-wsod/1"] = "geolesf.tasks.wsod_evaluate:evaluate_checkpoint"
EVALUATORS["geolesf-wsss/1"] = "geolesf.wsss.evaluate:evaluate_checkpoint"

#: checkpoint format → loader returning a :class:`geolesf.predict.tiled.PredictModel`.
PREDICT_LOADERS: dict[str, str] = {}
PREDICT_LOADERS["geolesf-hclip/1"] = "geolesf.tasks.hclip:load_for_predict"
PREDICT_LOADERS["geolesf-sam-peft/1"] = "geolesf.tasks.sam_peft_predict:predict_loader"
PREDICT_LOADERS["geolesf-wsss/1"] = "geolesf.wsss.predict:load_predict_model"

#: checkpoint format → CLI runner for non-raster outputs.
PREDICT_RUNNERS: dict[str, str] = {}
PREDICT_RUNNERS["geolesf-sam-peft/1"] = "geolesf.tasks.sam_peft_predict:predict_runner"
PREDICT_RUNNERS["geolesf-wsod/1"] = "geolesf.predict.detect:run_cli"


def resolve(spec: str) -> Any:
    """``"package.module:function"`` → the function."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def task_module(task: str) -> Any:
    if task not in TASKS:
        import difflib

        close = difflib.get_close_matches(task, list(TASKS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"task: unknown task '{task}'{hint} (tasks: {', '.join(sorted(TASKS))})")
    try:
        return importlib.import_module(TASKS[task])
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("geolesf"):
            raise ConfigError(f"task '{task}' is not available in this geolesf build") from None
        raise


def lookup(table: dict[str, str], fmt: str | None, what: str, checkpoint: Any) -> Any:
    if fmt not in table:
        raise ModelError(f"{checkpoint}: no {what} for checkpoint format '{fmt}' "
                         f"(known: {', '.join(sorted(table)) or 'none'})")
    return resolve(table[fmt])


def checkpoint_format(checkpoint: Any) -> str | None:
    """The ``format`` string of a checkpoint file or ``MODEL:TAG``, for routing only.

    The file is memory-mapped, not read or hashed: the loader the format routes to reads and
    verifies it once (a SAM or CLIP checkpoint is hundreds of MB).
    """
    import torch

    from geolesf.registry import _resolve_checkpoint

    path, _ = _resolve_checkpoint(checkpoint)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # not the zip format torch.save writes: no memory map, read it whole
        payload = None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise ModelError(f"{path}: not a readable geolesf checkpoint ({exc.__class__.__name__})") from None
    if payload is None:
        from geolesf.registry import read_checkpoint

        payload, _, _ = read_checkpoint(path)
    return payload.get("format") if isinstance(payload, dict) else None
