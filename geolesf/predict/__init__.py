"""Prediction: tiled, streaming, georeferenced maps (``tiled``); PredictModel and the predictor-side types.

The package itself is callable, so ``geolesf.predict(source, model, out, ...)`` runs
:func:`geolesf.predict.tiled.predict_raster` (a file path or an ``xarray.DataArray`` in, a
Cloud-Optimized GeoTIFF out) while ``geolesf.predict.tiled`` stays importable as a module.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from geolesf.predict.tiled import predict_raster

        return predict_raster(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
