"""Dataset names where a file is expected: ``--cube indian_pines``, ``data.labels: indian_pines``.

The rule (one, everywhere a cube, label map, split map or scene is read):

* a value that names an existing file (or ``PATH:KEY`` of one) is used as it is;
* a value that is a *bare name* — letters, digits and ``_`` only: no path separator, no suffix, no
  ``:`` — and is not an existing file is looked up in the dataset catalog
  (:mod:`geolesf.data.catalog`); it stands for the dataset's file of the role the option reads
  (:data:`ROLES`: ``--cube`` → the ``cube`` file, ``--labels`` → the ``ground_truth`` file, …), the
  first such file of the catalog entry that is required, found locally through the usual search
  ($GEOLESF_DATA, $GEOLESF_HOME/data, the data shipped in the package). A ``.mat`` file's catalogued
  key is appended (``PATH:KEY``). Other files of a dataset: ``geolesf data path NAME --file FILE``;
* an unknown bare name is a :class:`DataError` with the closest catalog names;
* a missing file whose base name is a catalogued file (the README's ``IP_200_M.mat`` run outside the
  package folder) is a :class:`DataError` that says which dataset holds it and how to name it.

Anything else is returned unchanged for the reader to judge.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from pathlib import Path, PurePosixPath
from typing import Any

from geolesf.errors import DataError

#: Catalog file roles a value stands for, per kind of input, in order of preference.
ROLES: dict[str, tuple[str, ...]] = {
    "cube": ("cube", "image"),
    "labels": ("ground_truth", "labels"),
    "train_map": ("train_map", "train_mask"),
    "test_map": ("test_map",),
    "scene": ("cube", "image"),
    "image": ("image", "cube"),
}

#: ``DataConfig`` fields holding a source, and the kind each is.
DATA_FIELDS = {"cube": "cube", "labels": "labels", "train_map": "train_map", "test_map": "test_map",
               "test_labels": "labels", "image": "image", "eval_labels": "labels", "test_image": "image"}

#: ``data.*`` keys that ``geolesf train`` also takes as ``--key`` flags (for the hint in messages).
TRAIN_FLAGS = ("cube", "labels", "train_map", "test_map", "test_labels")

_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def is_bare_name(text: str) -> bool:
    """Letters, digits and ``_`` only (no separator, suffix or ``:KEY``)."""
    return bool(_NAME.match(text))


def _exists(text: str) -> bool:
    from geolesf.io.cube import split_spec

    path, _ = split_spec(text)
    return path.exists()


def resolve_source(spec: Any, kind: str, flag: str | None = None) -> Any:
    """``spec`` as a readable path spec: a dataset name becomes its local file (see the module doc).

    ``kind`` is a key of :data:`ROLES`; ``flag`` names the option in messages (default ``--<kind>``).
    """
    if spec is None or not isinstance(spec, (str, Path)):
        return spec
    text = str(spec)
    flag = flag or f"--{kind.replace('_', '-')}"
    if not text or _exists(text):
        return spec
    if is_bare_name(text):
        return _catalog_file(text, kind, flag)
    _hint_catalogued(text, flag)
    return spec


def _catalog_file(name: str, kind: str, flag: str) -> str:
    from geolesf.data import catalog

    entries = catalog.load_catalog()
    if name not in entries:
        close = difflib.get_close_matches(name, list(entries), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise DataError(f"{flag} {name}: no such file and no dataset of that name in the catalog{hint} "
                        "(`geolesf data list` shows the names)")
    entry = entries[name]
    roles = ROLES[kind]
    files = [f for r in roles for f in entry.files if f.role == r]
    if not files:
        held = ", ".join(sorted({f.role for f in entry.files if f.role})) or "none"
        raise DataError(f"{flag} {name}: dataset '{name}' has no {' or '.join(roles)} file (its roles: {held}); "
                        f"name a file with $(geolesf data path {name} --file FILE)")
    ordered = [f for f in files if f.required] + [f for f in files if not f.required]
    for f in ordered:
        path = catalog.locate(entry, f)
        if path is not None:
            return f"{path}:{f.key}" if f.key and path.suffix.lower() == ".mat" else str(path)
    # Not present locally: the catalog's own message says where it looked and how to fetch it.
    catalog.dataset_path(name, ordered[0].name)
    raise AssertionError("unreachable")  # pragma: no cover - dataset_path raised


def _hint_catalogued(text: str, flag: str) -> None:
    """A :class:`DataError` when ``text`` is a missing path whose file name the catalog knows."""
    from geolesf.data import catalog
    from geolesf.io.cube import split_spec

    base = PurePosixPath(str(split_spec(text)[0]).replace("\\", "/")).name
    try:
        entries = catalog.load_catalog()
    except DataError:
        return
    for entry in entries.values():
        for f in entry.files:
            if PurePosixPath(f.name).name == base:
                use = _use(flag, entry.name)
                raise DataError(f"{flag} {text}: file not found; it is a file of the catalogued dataset "
                                f"'{entry.name}': {use}, or $(geolesf data path {entry.name} --file {f.name})")


def _use(flag: str, name: str) -> str:
    """How to give dataset ``name`` for ``flag`` (an option, a ``data.*`` key or the predict scene)."""
    if flag.startswith("--"):
        return f"use {flag} {name}"
    key = flag.removeprefix("data.")
    if flag.startswith("data.") and key in TRAIN_FLAGS:
        return f"use --{key.replace('_', '-')} {name} ({flag}: {name} in a config)"
    if flag.startswith("data."):
        return f"use {flag}: {name}"
    return f"give '{name}' instead"


def resolve_data(data: Any) -> Any:
    """A copy of a data config (dataclass) with each source field (:data:`DATA_FIELDS`) resolved."""
    changes = {}
    for name, kind in DATA_FIELDS.items():
        value = getattr(data, name, None)
        if isinstance(value, str) and value:
            resolved = resolve_source(value, kind, flag=f"data.{name}")
            if resolved != value:
                changes[name] = resolved
    return dataclasses.replace(data, **changes) if changes else data


def dataset_file_paths(name: str, file: str | None = None, role: str | None = None) -> list[Path]:
    """Local paths of a dataset's files (``geolesf data path``): one ``file``, the files of a ``role``
    present locally (at least one), or every required file; a missing one is a :class:`DataError`
    saying how to obtain it."""
    from geolesf.data import catalog

    entry = catalog.get_dataset(name)
    if file is not None:
        return [catalog.dataset_path(name, file)]
    if role is not None:
        files = [f for f in entry.files if f.role == role]
        if not files:
            roles = ", ".join(sorted({f.role for f in entry.files if f.role})) or "none"
            raise DataError(f"{name}: no file with role '{role}' (roles: {roles})")
        present = [p for p in (catalog.locate(entry, f) for f in files) if p is not None]
        if present:
            return present
        files = files[:1]
    else:
        files = [f for f in entry.files if f.required]
    return [catalog.dataset_path(name, f.name) for f in files]
