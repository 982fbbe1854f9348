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
