"""The tiling and output options shared by every predictor, validated once, and the input checks.

:class:`TilingOptions` is what :func:`geolesf.predict.tiled.predict_raster`,
:func:`geolesf.predict.distributed.predict_distributed` and :func:`geolesf.predict.chunked.make_plan`
build from their keyword arguments. It is frozen and checks itself on construction (one-line
:class:`~geolesf.errors.ConfigError` messages), so every predictor refuses the same options with
the same words, before any work. :func:`check_inputs` and :func:`output_dtype` are the checks that
need the scene and the model.

This module imports neither torch nor rasterio.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geolesf.errors import ConfigError, DataError
from geolesf.predict import blend as _blend
from geolesf.predict.batching import MEMORY_FORMATS

if TYPE_CHECKING:
    from geolesf.predict.model import PredictModel
    from geolesf.predict.rowloop import RowPlan


@dataclass(frozen=True)
class TilingOptions:
    """Tile grid, blending, batching and output encoding of one prediction.

    ``margin`` may be given as ``None``: the constructed object holds the margin actually used
    (:func:`geolesf.predict.blend.check_geometry`).
    """

    tile: int = 512
    overlap: int = 64
    blend: str = "cosine"
    margin: int | None = None
    blend_on: str = "probabilities"
    batch_size: int = 16
    pixel_batch: int = 4096
    probabilities_dtype: str = "float32"
    nodata: float | None = None
    out_nodata: int | None = None
    block: int = 512
    device: str = "cpu"
    memory_format: str = "auto"
    """Layout of the dense batch input: ``auto`` (channels-last on CPU for convolutional
    ``nn.Module`` s), ``channels_last`` or ``contiguous`` (:mod:`geolesf.predict.batching`)."""

    def __post_init__(self) -> None:
        if self.memory_format not in MEMORY_FORMATS:
            raise ConfigError(f"memory_format must be one of {', '.join(MEMORY_FORMATS)}, "
                              f"found '{self.memory_format}'")
        if self.blend_on not in ("probabilities", "logits"):
            raise ConfigError(f"blend_on must be 'probabilities' or 'logits', found '{self.blend_on}'")
        if self.probabilities_dtype not in ("float32", "uint8"):
            raise ConfigError(f"probabilities dtype must be float32 or uint8, found '{self.probabilities_dtype}'")
        if self.block < 16 or self.block % 16:
            raise ConfigError(f"block must be a positive multiple of 16, found {self.block}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, found {self.batch_size}")
        if self.pixel_batch < 1:
            raise ConfigError(f"pixel_batch must be at least 1, found {self.pixel_batch}")
        object.__setattr__(self, "margin", _blend.check_geometry(self.tile, self.overlap, self.blend, self.margin))

    @property
    def blend_margin(self) -> int:
        """The margin actually used (``margin`` as resolved on construction)."""
        return int(self.margin or 0)

    @property
    def prob_u8(self) -> bool:
        return self.probabilities_dtype == "uint8"

    def for_model(self, pm: PredictModel) -> TilingOptions:
        """The options a model runs with: per-pixel patch models neither overlap nor blend."""
        if pm.kind == "pixel":
            return dataclasses.replace(self, overlap=0, blend="none", margin=0)
        return self

    def row_plan(self, height: int, width: int, *, want_probs: bool, out_dtype: str, nodata_out: int) -> RowPlan:
        """The :class:`~geolesf.predict.rowloop.RowPlan` of a ``height × width`` scene (after :meth:`for_model`)."""
        from geolesf.predict.rowloop import RowPlan

        return RowPlan(
            height=height, width=width, tile=self.tile, overlap=self.overlap, blend=self.blend,
            margin=self.blend_margin, batch_size=self.batch_size, blend_on=self.blend_on, want_probs=want_probs,
            prob_u8=self.prob_u8, out_dtype=out_dtype, nodata_out=nodata_out, nodata=self.nodata,
            device=self.device, pixel_batch=self.pixel_batch, block=self.block, memory_format=self.memory_format,
        )


def output_dtype(class_ids: Sequence[int], out_nodata: int | None) -> tuple[str, int]:
    """The class map's dtype and nodata value: ``out_nodata`` or the first of 0, 255, 65535 not a class id."""
    ids = {int(i) for i in class_ids}
    if out_nodata is None:
        out_nodata = next(v for v in (0, 255, 65535) if v not in ids)
    if int(out_nodata) in ids:
        raise ConfigError(f"output nodata {out_nodata} is also a class id; choose another")
    dtype = "uint8" if max(ids | {int(out_nodata)}) < 256 else "uint16"
    return dtype, int(out_nodata)


def check_inputs(src: Any, pm: PredictModel, tile: int) -> None:
    """Refuse a source the model cannot read (bands, pixel type) or a tile size it cannot run."""
    if src.count < 1:
        raise DataError(f"{src.name} has no data bands")
    if pm.in_bands is not None and src.count != pm.in_bands:
        raise DataError(f"{src.name} has {src.count} bands; model {pm.name} expects {pm.in_bands}")
    if src.dtype.kind not in "biuf":
        raise DataError(f"{src.name}: unsupported pixel type {src.dtype}; expected integers or floats")
    if src.crs is None:
        warnings.warn(f"{src.name} has no CRS: the prediction is written in pixel coordinates "
                      "(not georeferenced)", UserWarning, stacklevel=3)
    if pm.kind == "dense" and tile % max(1, pm.size_divisor):
        d = pm.size_divisor
        raise ConfigError(f"--tile {tile}: model {pm.name} needs a multiple of {d} (try {max(d, tile - tile % d)})")
