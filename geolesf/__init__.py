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


# --------------------------------------------------------------------------------------------
# xarray accessor: ``import geolesf`` registers ``DataArray.geolesf`` / ``Dataset.geolesf`` as soon
# as xarray is imported (now, or later through a one-shot import hook), without importing xarray,
# numpy or torch itself, so ``geolesf --help`` stays light.


class _XarrayLoader:
    def __init__(self, loader: Any, hook: Any) -> None:
        self._loader, self._hook = loader, hook

    def __getattr__(self, name: str) -> Any:  # resource readers, get_source, ...
        if name in ("_loader", "_hook"):
            raise AttributeError(name)
        return getattr(self._loader, name)

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        import sys

        self._loader.exec_module(module)
        if self._hook in sys.meta_path:
            sys.meta_path.remove(self._hook)
        importlib.import_module("geolesf.xarray.accessor")


class _XarrayHook:
    """``sys.meta_path`` finder that wraps xarray's loader; it leaves ``sys.meta_path`` only once
    xarray has actually been executed (a bare ``importlib.util.find_spec("xarray")`` — dask and
    others probe for optional packages that way — must not disarm it)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "xarray":
            return None
        import importlib.util
        import sys

        sys.meta_path.remove(self)  # find the real spec without recursing into this finder
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _XarrayLoader(spec.loader, self)
        return spec


def _register_xarray_accessor() -> None:
    import sys

    if "xarray" in sys.modules:
        importlib.import_module("geolesf.xarray.accessor")
    elif not any(isinstance(f, _XarrayHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _XarrayHook())


_register_xarray_accessor()
