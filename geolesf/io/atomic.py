"""Atomic output: every file geolesf writes appears at its destination complete or not at all.

:func:`atomic_path` yields a temporary name beside the destination (same folder, so the final
``os.replace`` is a rename on one filesystem) and renames it into place only when the block
finishes without an exception. :func:`check_tif_out` is the up-front check of a GeoTIFF
destination that every predictor and exporter shares.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from geolesf.errors import DataError

@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp", create: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary name is unique (``.NAME.XXXXXXXX<suffix>``): concurrent writers never share one.
    ``suffix`` keeps an extension a GDAL driver insists on (``.gpkg``); with ``create=False`` the
    temporary file does not exist yet when the block starts (for writers that refuse to open an
    existing file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    if not create:
        tmp_path.unlink()
    try:
        yield tmp_path
        # mkstemp creates the file private (0600); give the result the usual umask permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def check_tif_out(out: Path, what: str) -> None:
    """A :class:`DataError` unless ``out`` is a ``.tif``/``.tiff`` path in an existing folder."""
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise DataError(f"{what} {out}: expected a .tif path for the GeoTIFF output")
    if not out.parent.is_dir():
        raise DataError(f"{what} {out}: folder {out.parent} does not exist")


def write_json(path: str | Path, obj: Any, indent: int = 1) -> Path:
    """``obj`` as indented JSON at ``path``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, default=str) + "\n")
    return Path(path)


def write_yaml(path: str | Path, cfg: Any) -> Path:
    """A config dataclass (or dict) as YAML at ``path``, atomically."""
    import yaml

    from geolesf.config import to_dict

    data = to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    return Path(path)
