"""Typed run configurations loaded from YAML and overridable from the command line.

A run is described by a tree of dataclasses (:class:`TrainConfig`). YAML files fill it (a path,
or the name of a config shipped in ``geolesf/configs/``, e.g. ``s2mamba/indian_pines``:
:func:`geolesf.paths.find_config`); ``--set section.key=value`` overrides single values (the value is
parsed as YAML, so ``--set trainer.seeds=[0,1,2]`` works). An unknown key is an error
that names the key and suggests the closest valid one. The resolved config is saved in
every run folder so a run can be reproduced from it.
"""

from __future__ import annotations

import dataclasses
import os
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geolesf.errors import ConfigError


@dataclass
class DataConfig:
    """Where the cube and labels come from and how pixels are split."""

    cube: str | None = None
    """Cube file: ``.mat`` (``PATH:KEY`` to choose a key), ENVI ``.hdr`` or any rasterio raster."""
    labels: str | None = None
    """Ground-truth map (same formats); 0 = unlabelled."""
    split: str = "random"
    """random | count | fixed | dase | disjoint (see :mod:`geolesf.data.splits`)."""
    train_fraction: float = 0.1
    per_class: int | None = None
    min_per_class: int = 1
    train_map: str | None = None
    """fixed split: training map (``.mat``/TIFF), or a ``.mat`` holding ``TR`` and ``TE``."""
    test_map: str | None = None
    remap: dict[int, int] | None = None
    """fixed/dase split: map the split file's class ids to the label ids."""
    block_size: int = 10
    """disjoint split: side of the square blocks assigned whole to train or test."""
    buffer: int | None = None
    """disjoint split: pixels dropped around training blocks (default: patch radius)."""
    normalize: str = "train"
    """z-score statistics from 'train' pixels only, the whole 'scene' (official S²Mamba), or 'none'."""
    pca: int | None = None
    """Keep this many principal components (fitted on training pixels); None = all bands."""
    patch_size: int = 7
    padding: str = "symmetric"
    """symmetric (edge-repeating mirror, as S²Mamba) | reflect | zero."""
    class_names: dict[int, str] | None = None
    """Names of the label ids (``{1: Alfalfa, ...}``); default ``class_<id>``."""
    mask_unlabelled: bool = False
    """Class map: write 0 on pixels unlabelled in the ground truth (default: predict every pixel)."""
    label_field: str | None = None
    """Vector labels (GeoPackage, GeoJSON, Shapefile): the attribute holding the class (integer ids or names)."""
    all_touched: bool = False
    """Vector labels: burn every pixel a polygon touches (default: pixels whose centre is inside)."""
    test_labels: str | None = None
    """Separate validation labels (raster or vector, same field): the test pixels of the run."""
    cv_blocks: int | None = None
    """Spatial block cross-validation with K folds (mean ± std and leakage per fold)."""
    cv_fold: int | None = None
    """With ``cv_blocks``: run only this fold (0..K-1); each fold's ``config.yaml`` sets it."""
    drop_bands: Any = None
    """Bands to drop before training: ``water`` (atmospheric water-vapour absorption), wavelength
    ranges in nm (``[[1340, 1460], [1790, 1960]]``), or a mix (``[water, [350, 400]]``)."""
    windowed: Any = "auto"
    """Read the cube through windows instead of whole: ``auto`` (when it exceeds the memory budget), true, false."""


@dataclass
class ModelConfig:
    name: str = "s2mamba"
    args: dict[str, Any] = field(default_factory=dict)
    """Constructor arguments passed to ``create_model`` (bands and classes are filled in)."""


@dataclass
class LightningOptions:
    """Trainer settings every method accepts under ``trainer:`` (a base of each method's trainer config)."""

    seed: int = 0
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    """Lightning strategy, e.g. ``ddp`` (one process per device; multi-node with ``num_nodes``)."""
    num_nodes: int = 1
    num_threads: int | None = None
    """torch CPU threads (default: torch's own choice)."""
    precision: Any = None
    """Lightning precision, e.g. ``bf16-mixed`` (default: Lightning's, 32-bit)."""
    logger: Any = False
    """``false`` (default), ``true`` (Lightning's default logger) or ``csv`` / ``tensorboard`` (logs in the run folder)."""
    callbacks: list[str] = field(default_factory=list)
    """Extra callbacks as ``package.module:Class`` (constructed without arguments)."""


@dataclass
class TrainerConfig(LightningOptions):
    """HSI trainer settings; ``seed``, ``accelerator``, ``devices``, ``strategy``, ``num_nodes``,
    ``num_threads``, ``precision``, ``logger`` and ``callbacks`` come from :class:`LightningOptions`."""

    epochs: int = 100
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 5e-3
    gamma: float = 0.99
    """ExponentialLR decay per epoch."""
    seeds: list[int] | None = None
    """Several seeds: one run each, mean ± std reported."""
    deterministic: bool = True
    eval_every: int = 0
    """Evaluate on the test pixels every N epochs (0 = only at the end)."""
    scan_backend: str = "auto"
    resume: str | None = None
    """Checkpoint to resume training from."""
    scene_map: bool = True
    """Classify the whole scene after training (classmap.tif, preview.png); false skips it."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"trainer.{name} must be at least 1, found {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"trainer.lr must be above 0, found {self.lr}")


def run_config_class(name: str, *, task: str, out: str, model: type, data: type, trainer: type,
                     extra: tuple[tuple[str, type, Any], ...] = (), module: str | None = None,
                     doc: str | None = None) -> type:
    """The config dataclass of one method's runs: ``task``, ``out``, ``model``, ``data``, ``trainer``.

    Every method's ``train.CONFIG`` is built here, so the top-level layout a YAML file follows is
    the same everywhere. ``extra`` adds ``(name, type, default)`` fields (a dataclass type as default
    means "a fresh instance"), placed after ``out``.
    """

    def default(value: Any) -> Any:
        if isinstance(value, type) and dataclasses.is_dataclass(value):
            return field(default_factory=value)
        return field(default=value)

    fields = [("task", str, field(default=task)), ("out", str, field(default=out))]
    fields += [(n, t, default(v)) for n, t, v in extra]
    fields += [("model", model, default(model)), ("data", data, default(data)), ("trainer", trainer, default(trainer))]
    cls = dataclasses.make_dataclass(name, fields)
    cls.__module__ = module or __name__
    cls.__doc__ = doc or f"``task: {task}`` run config: ``out``, ``model``, ``data``, ``trainer`` sections."
    return cls


TrainConfig = run_config_class("TrainConfig", task="hsi", out="runs/run", model=ModelConfig, data=DataConfig,
                               trainer=TrainerConfig, doc="``task: hsi`` run config (rf, svm, s2mamba).")


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _unknown_key(key: str, where: str, valid: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"
    return ConfigError(f"{where}: unknown key '{key}'{hint}")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert a YAML value against a dataclass field type."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, found {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, found {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, found {value!r}")
        kt, vt = args
        return {_coerce(k, kt, where): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, found {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.isascii() and value.removeprefix("-").isdigit():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, found {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                return float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: expected a number, found {value!r}") from None
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"{where}: number out of range, found {value!r}") from None
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, found {value!r}")
        text = str(value)
        # Paths in shipped configs may name $GEOLESF_DATA or ~; expand them here, once.
        return os.path.expanduser(os.path.expandvars(text)) if ("$" in text or text.startswith("~")) else text
    return value


def from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys with a suggestion."""
    hints = typing.get_type_hints(cls)
    names = _field_names(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise _unknown_key(str(key), where, names)
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    return cls(**kwargs)


def apply_override(data: dict[str, Any], cls: type, assignment: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML) to a nested mapping, validating keys."""
    import yaml

    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE")
    dotted, raw = assignment.split("=", 1)
    parts = dotted.strip().split(".")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node, node_cls, where = data, cls, "--set"
    for i, part in enumerate(parts):
        if node_cls is not None:
            names = _field_names(node_cls)
            if part not in names:
                raise _unknown_key(part, f"--set {dotted}", names)
            tp = typing.get_type_hints(node_cls)[part]
            node_cls = tp if dataclasses.is_dataclass(tp) else None
        if i == len(parts) - 1:
            node[part] = value
        else:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{where} {dotted}: '{part}' is not a section")


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    from geolesf.paths import find_config

    path = find_config(path)  # a file, or a shipped config by name (s2mamba/indian_pines)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {exc.start}: {exc.reason})") from None
    except (yaml.YAMLError, ValueError, RecursionError) as exc:  # PyYAML raises ValueError for bad dates/!!int
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {type(data).__name__}")
    return data


def load_config(
    cls: type = TrainConfig,
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
    initial: dict[str, Any] | None = None,
) -> Any:
    """Load ``cls`` from a YAML file (or an ``initial`` mapping), then dotted ``base`` values, then ``--set``."""
    import copy

    data: dict[str, Any] = load_yaml(path) if path else copy.deepcopy(initial or {})
    where = str(path) if path else "config"
    for key, value in (base or {}).items():
        _merge(data, key, value)
    for assignment in overrides or []:
        apply_override(data, cls, assignment)
    return from_dict(cls, data, where)


def parse_options(items: list[str], flag: str = "--option") -> dict[str, Any]:
    """``["k=v", ...]`` (values parsed as YAML) → dict; a malformed item is a :class:`ConfigError`."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"{flag} {item!r}: value is not valid YAML") from None
    return out


def peek_task(path: str | Path | None, overrides: list[str] | None = None, default: str = "hsi") -> str:
    """The ``task`` a config file and its ``--set`` overrides select (``default`` when absent)."""
    task = default
    if path:
        task = str(load_yaml(path).get("task", default))
    for assignment in overrides or []:
        key, sep, value = assignment.partition("=")
        if sep and key.strip() == "task":
            task = value.strip()
    return task


def _merge(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
