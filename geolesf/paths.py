"""Where geolesf keeps downloaded data and weights.

``GEOLESF_HOME`` (default ``~/.cache/geolesf``) holds ``data/<dataset>/`` and ``weights/``.
``GEOLESF_DATA`` optionally points at an extra read-only data root (the shared real data
used by the tests) that is searched before the home.
"""

from __future__ import annotations

import os
from pathlib import Path


def geolesf_home() -> Path:
    """The root folder for geolesf's cache (not created here)."""
    return Path(os.environ.get("GEOLESF_HOME", "~/.cache/geolesf")).expanduser()


def data_home() -> Path:
    return geolesf_home() / "data"


def weights_home() -> Path:
    return geolesf_home() / "weights"


def extra_data_root() -> Path | None:
    """The read-only data root named by ``GEOLESF_DATA``, if set."""
    value = os.environ.get("GEOLESF_DATA")
    return Path(value).expanduser() if value else None


def embedded_data_root() -> Path:
    """Small permissively licensed real data shipped inside the package."""
    return Path(__file__).resolve().parent / "embedded"


def configs_root() -> Path:
    """The run configurations shipped inside the package (``geolesf/configs/<group>/<name>.yaml``)."""
    return Path(__file__).resolve().parent / "configs"


def packaged_configs() -> list[str]:
    """Names of the shipped configs, ``group/name`` (what ``--config`` accepts), sorted."""
    root = configs_root()
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))


def find_config(value: str | Path) -> Path:
    """The config file ``value`` names: an existing file as given, else a shipped config by name.

    ``s2mamba/indian_pines``, ``s2mamba/indian_pines.yaml`` and ``configs/s2mamba/indian_pines.yaml``
    (the path inside a clone, from any folder) all name ``geolesf/configs/s2mamba/indian_pines.yaml``.
    A file in the working folder wins over a shipped config of the same name. Anything else is a
    :class:`~geolesf.errors.ConfigError` with the closest shipped names.
    """
    import difflib

    from geolesf.errors import ConfigError

    path = Path(value).expanduser()
    if path.is_file():
        return path
    text = str(value).replace("\\", "/")
    for prefix in ("./", "geolesf/configs/", "configs/"):
        text = text.removeprefix(prefix)
    name = text.removesuffix(".yaml").removesuffix(".yml")
    names = packaged_configs()
    if name in names:
        return configs_root() / f"{name}.yaml"
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    hint = f"; shipped configs close to it: {', '.join(close)}" if close else ""
    raise ConfigError(f"{value}: config file not found (neither a file nor a shipped config name{hint}; "
                      "`geolesf train --list-configs` lists them)")
