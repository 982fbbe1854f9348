"""What every training run shares: the run folder, seeding and threads, atomic records, the Lightning trainer.

Each method's ``train.run_config(cfg)`` starts with :func:`start_run` (folder created, seeds set, torch
threads limited), builds its Trainer with :func:`make_trainer` (so ``trainer.logger``, ``precision``,
``callbacks``, ``devices``, ``strategy`` and ``num_nodes`` in the YAML reach Lightning instead of being
hard-coded), and writes ``config.yaml`` / ``metrics.json`` / ``history.json`` with
:func:`geolesf.io.atomic.write_json` and :func:`geolesf.io.atomic.write_yaml` (temporary file beside,
then rename: an interrupted run never leaves half a record).

Only training code imports this module: it imports Lightning.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from geolesf.config import LightningOptions
from geolesf.errors import ConfigError


def start_run(out: str | Path, options: LightningOptions, record: Any = None) -> Path:
    """Create the run folder, seed Python/numpy/torch, set torch threads; returns the folder.

    ``record`` (the run's config) is written to ``config.yaml`` now, so an interrupted run still says
    what it was; methods rewrite it at the end when training filled in values.
    """
    import lightning as L
    import torch

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if record is not None:
        from geolesf.io.atomic import write_yaml

        write_yaml(out / "config.yaml", record)
    L.seed_everything(options.seed, workers=True, verbose=False)
    if options.num_threads:
        torch.set_num_threads(int(options.num_threads))
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    return out


def _logger(value: Any, out: Path) -> Any:
    if value in (False, None, "false", "none"):
        return False
    if value is True or value == "true":
        return True
    from lightning.pytorch import loggers

    named = {"csv": loggers.CSVLogger, "tensorboard": loggers.TensorBoardLogger}
    if value not in named:
        raise ConfigError(f"trainer.logger: expected false, true, csv or tensorboard, found '{value}'")
    return named[value](save_dir=str(out), name="logs")


def _callback(spec: str) -> Any:
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)()
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"trainer.callbacks: cannot build '{spec}' ({exc})") from None


def make_trainer(options: LightningOptions, out: Path, *, callbacks: list[Any] = (), **fixed: Any) -> Any:
    """A ``lightning.Trainer`` from the config's options plus the method's ``fixed`` settings.

    ``fixed`` holds what the method decides (``max_epochs``, ``max_steps``, validation, checkpointing);
    the user's ``trainer:`` options (accelerator, devices, strategy, nodes, precision, logger,
    callbacks) always come from ``options``.
    """
    import lightning as L

    kwargs: dict[str, Any] = {
        "accelerator": options.accelerator, "devices": options.devices, "strategy": options.strategy,
        "num_nodes": options.num_nodes, "logger": _logger(options.logger, out), "enable_model_summary": False,
        "default_root_dir": str(out), "enable_checkpointing": False,
    }
    if options.precision is not None:
        kwargs["precision"] = options.precision
    kwargs.update(fixed)
    check_run_length(kwargs.get("max_epochs"), kwargs.get("max_steps"))
    kwargs["callbacks"] = [*callbacks, *(_callback(s) for s in options.callbacks)]
    return L.Trainer(**kwargs)


def check_run_length(max_epochs: int | None, max_steps: int | None) -> None:
    """A :class:`ConfigError` for a run that would never start or never stop.

    Lightning reads ``-1`` as "no limit": ``max_epochs=-1`` with no positive ``max_steps`` trains forever.
    """
    steps_bound = max_steps is not None and max_steps >= 1
    if max_steps is not None and max_steps != -1 and max_steps < 1:
        raise ConfigError(f"trainer: max_steps must be at least 1 (or -1 for no step limit), found {max_steps}")
    if max_epochs is not None and max_epochs != -1 and max_epochs < 1:
        raise ConfigError(f"trainer.epochs must be at least 1, found {max_epochs}")
    if max_epochs == -1 and not steps_bound:
        raise ConfigError("trainer: epochs -1 with no positive max_steps would train forever; give epochs >= 1 "
                          "or max_steps >= 1")
