"""geolesf: remote-sensing and geospatial machine learning.

The package root stays light: heavy modules (torch, rasterio) load only when a name
that needs them is first used (PEP 562 lazy attributes), so ``geolesf --help`` is instant.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "GeolesfError": "geolesf.errors",
    "register_model": "geolesf.registry",
    "create_model": "geolesf.registry",
    "list_models": "geolesf.registry",
    "load_pretrained": "geolesf.registry",
}

# ``geolesf.predict`` is a callable subpackage (see geolesf/predict/__init__.py).

__all__ = ["__version__", "predict", *_LAZY]


def __getattr__(name: str) -> Any:
    if name == "predict":
        return importlib.import_module("geolesf.predict")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'geolesf' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
