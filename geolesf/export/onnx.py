"""ONNX export of dense and per-pixel models, with Deepness-compatible metadata: :func:`export_onnx`.

``geolesf export-model CKPT --onnx model.onnx`` loads a checkpoint through its method's
``predict_model`` (the :class:`~geolesf.predict.model.PredictModel` ``geolesf predict`` uses), appends
a softmax and exports it with ``torch.onnx.export(dynamo=False)`` (the TorchScript exporter, opset
17), then checks onnxruntime against PyTorch on a seeded random input before the file is renamed into
place (max abs difference of the probabilities ≤ :data:`TOLERANCE`, else nothing is written).

The graph
    input ``input``: the *normalised* model input, float32 ``(batch, bands, height, width)`` (dense;
    batch, height and width dynamic) or ``(batch, bands, P, P)`` patches (pixel; batch dynamic);
    output ``probabilities``: softmax over classes, ``(batch, classes, height, width)`` or ``(batch,
    classes)``. The band normalisation is *not* baked into the graph: for Deepness it is written as
    ``standardization_mean`` / ``standardization_std`` chosen so that Deepness's own preprocessing
    (uint8 / 255, then ``(x - mean) / std``) gives exactly geolesf's normalisation — ``mean = m·d/255``,
    ``std = s·d/255`` for geolesf's ``(x / d - m) / s`` — and for geolesf as ``geolesf_normalisation``.
    Deepness reads 8-bit rasters only, so a model trained on 16-bit or float scenes is usable in Deepness
    only on scenes scaled the same way; geolesf itself feeds the raw values of any scene.

S²Mamba (per-pixel): its selective scans are exported through the ``unrolled`` backend, the recurrence
written with torch ops and laid out for tracing; tracing unrolls it over the sequence (49 steps in PCS, 128
in BSS for 7×7 patches), so the graph is a few thousand nodes, with no Loop/Scan operator. Models whose inputs decide the control
flow (the CAM seed scores of ``geolesf-wsss/1`` CAM / USAGE checkpoints: classes present per tile, per-tile
maximum normalisation) trace into a graph that is only right for the example input; the parity check on a
second input refuses them. See ``docs/onnx.md`` for what exports.
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geolesf.errors import ConfigError, ModelError
from geolesf.predict.model import PredictModel
from geolesf.predict.onnx_engine import ONNX_FORMAT, require

TOLERANCE = 1e-4
OPSET = 17
#: Deepness's documented metadata keys and the JSON types of their values, from
#: https://github.com/PUTvision/qgis-plugin-deepness/blob/f450c6342d82a200af32022b2d977231d4f71d3c/docs/source/creators/creators_add_metadata_to_model.rst
#: ("List of parameters parsed by plugin"); values are ``json.dumps`` strings (the docs' example).
#: ``class_names`` maps the output channel index to a name (keys must be 0..C-1, consecutive).
DEEPNESS_DOCUMENTED = {
    "model_type": str, "class_names": dict, "resolution": float, "tiles_size": int, "tiles_overlap": int,
    "standardization_mean": list, "standardization_std": list, "seg_thresh": float, "seg_small_segment": int,
    "reg_output_scaling": float, "det_conf": float, "det_iou_thresh": float, "det_type": str,
}
#: The keys a ``Segmentor`` export writes (regression and detection keys do not apply). ``tile_size`` is not
#: in the documented list, but it is the key the plugin's code reads for the tile size
#: (``ModelBase.get_metadata_tile_size`` in src/deepness/processing/models/model_base.py at the same commit),
#: so both spellings are written.
DEEPNESS_SEGMENTOR_KEYS = ("model_type", "class_names", "resolution", "tiles_size", "tile_size", "tiles_overlap",
                           "standardization_mean", "standardization_std", "seg_thresh", "seg_small_segment")


_HINTS = {"geolesf-wsss/1": "; of wsss checkpoints only the single-stage segmentation head exports "
                            "(--option stage=final): CAM/USAGE seed scores size their multi-scale inputs in Python "
                            "from the tile size, which a graph with a dynamic tile size cannot record"}


@dataclass
class ExportResult:
    out: Path
    kind: str
    nodes: int
    bytes: int
    max_abs_diff: float
    metadata: dict[str, Any] = field(default_factory=dict)
    resolution_from: str = ""


class _Probabilities(nn.Module):
    """The model followed by a softmax over the class axis (what Deepness expects from a Segmentor)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


def exportable_module(pm: PredictModel) -> nn.Module:
    """A copy of ``pm.module`` with a softmax, every selective scan on the ``unrolled`` backend (torch ops laid
    out for tracing, :mod:`geolesf.ops.selective_scan.unrolled`)."""
    module = copy.deepcopy(pm.module).cpu().eval()
    for sub in module.modules():
        if hasattr(sub, "scan_backend"):
            sub.scan_backend = "unrolled"
    return _Probabilities(module).eval()


def _example(pm: PredictModel, batch: int, seed: int, side: int | None = None) -> torch.Tensor:
    """A seeded normal input of the model's (normalised) shape."""
    bands = int(pm.in_bands or 3)
    if pm.kind == "pixel":
        size = pm.patch_size
    else:
        d = max(1, pm.size_divisor)
        size = side or max(64, 2 * d)
        size = -(-size // d) * d
    if pm.normalise is not None:
        bands = pm.normalise(np.zeros((bands, 1, 1), np.float32)).shape[0]
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.standard_normal((batch, bands, size, size)).astype(np.float32))


def deepness_metadata(pm: PredictModel, *, tile: int, overlap: int, resolution_cm: float | None,
                      seg_thresh: float, seg_small_segment: int) -> dict[str, Any]:
    """Deepness's ``Segmentor`` keys for a dense model (see :data:`DEEPNESS_SEGMENTOR_KEYS`)."""
    spec = pm.normalisation or {"kind": "bands"}
    bands = int(pm.in_bands or 3)
    d = float(spec.get("divide") or 1.0)
    m = spec.get("band_mean") or [0.0] * bands
    s = spec.get("band_std") or [1.0] * bands
    meta: dict[str, Any] = {
        "model_type": "Segmentor",
        "class_names": {i: str(n) for i, n in enumerate(pm.class_names)},
        "tiles_size": int(tile), "tile_size": int(tile),
        "tiles_overlap": int(round(100 * overlap / tile)),
        "standardization_mean": [float(v) * d / 255.0 for v in m],
        "standardization_std": [float(v) * d / 255.0 for v in s],
        "seg_thresh": float(seg_thresh), "seg_small_segment": int(seg_small_segment),
    }
    if resolution_cm is not None:
        meta["resolution"] = float(resolution_cm)
    return meta


def geolesf_metadata(pm: PredictModel, source_format: str | None, source_sha256: str) -> dict[str, Any]:
    """geolesf's own keys (:data:`geolesf.predict.onnx_engine.GEOLESF_KEYS`): what ``--engine onnxruntime`` reads."""
    from geolesf import __version__
    from geolesf.colors import to_hex

    return {
        "geolesf_format": ONNX_FORMAT, "geolesf_version": __version__, "geolesf_source_format": source_format,
        "geolesf_source_sha256": source_sha256, "geolesf_model": pm.name, "geolesf_kind": pm.kind,
        "geolesf_class_ids": [int(i) for i in pm.class_ids], "geolesf_class_names": [str(n) for n in pm.class_names],
        "geolesf_colors": [to_hex(c) for c in pm.colors], "geolesf_in_bands": pm.in_bands,
        "geolesf_patch_size": int(pm.patch_size), "geolesf_padding": pm.padding,
        "geolesf_size_divisor": int(pm.size_divisor), "geolesf_normalisation": pm.normalisation,
        "geolesf_output": "probabilities",
    }


def training_resolution(extra: dict[str, Any]) -> tuple[float | None, str]:
    """Centimetres per pixel recorded by training (``extra["pixel_size_m"]``), and where it came from."""
    size = extra.get("pixel_size_m") if isinstance(extra, dict) else None
    if isinstance(size, (int, float)) and size > 0:
        return float(size) * 100.0, f"the training scene ({extra.get('trained_on', 'pixel_size_m')})"
    return None, ""


def _trace(module: nn.Module, example: torch.Tensor, path: Path, kind: str, opset: int, hint: str = "") -> None:
    dims = {0: "batch", 2: "height", 3: "width"} if kind == "dense" else {0: "batch"}
    out_dims = dims if kind == "dense" else {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings on shape checks; the parity check decides
        try:
            torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=opset,
                              input_names=["input"], output_names=["probabilities"],
                              dynamic_axes={"input": dims, "probabilities": out_dims}, do_constant_folding=True)
        except Exception as exc:  # noqa: BLE001 - any exporter failure means this graph cannot be exported
            raise ModelError(f"model {type(module.model).__name__} cannot be exported to ONNX "
                             f"({exc.__class__.__name__}: {' '.join(str(exc).split())[:300]}){hint}") from None


def _write_metadata(path: Path, metadata: dict[str, Any]) -> int:
    onnx = require("onnx")
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, json.dumps(value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return len(model.graph.node)


def parity(module: nn.Module, path: Path, example: torch.Tensor) -> float:
    """Max abs difference of onnxruntime's and PyTorch's probabilities on ``example``."""
    from geolesf.predict.onnx_engine import session

    with torch.inference_mode():
        ref = module(example).numpy()
    out = session(path).run(None, {"input": example.numpy()})[0]
    if out.shape != ref.shape:
        return float("inf")
    return float(np.abs(out - ref).max())


def _source(checkpoint: Any) -> tuple[str | None, str, dict[str, Any]]:
    """Format, sha256 and ``extra`` of the source checkpoint (read weights-only)."""
    from geolesf.registry import read_checkpoint

    payload, digest, _ = read_checkpoint(checkpoint)
    extra = payload.get("extra", {}) if isinstance(payload, dict) else {}
    return (payload.get("format") if isinstance(payload, dict) else None), digest, dict(extra or {})


def export_onnx(
    checkpoint: str | Path,
    out: str | Path,
    *,
    model_name: str | None = None,
    options: dict[str, Any] | None = None,
    resolution_cm: float | None = None,
    tile: int = 512,
    overlap: int = 64,
    seg_thresh: float = 0.0,
    seg_small_segment: int = 0,
    opset: int = OPSET,
    overwrite: bool = False,
) -> ExportResult:
    """Export ``checkpoint`` (a geolesf checkpoint or ``MODEL:TAG``) to ``out`` (.onnx); see the module docstring.

    ``resolution_cm`` (Deepness ``resolution``, cm/px) defaults to the training scene's pixel size when the
    checkpoint records it (``extra["pixel_size_m"]``); ``tile`` / ``overlap`` (pixels) become Deepness's
    ``tiles_size`` / ``tiles_overlap`` (percent of the tile). ``options`` go to the checkpoint's loader
    (e.g. ``stage=final`` of a single-stage wsss checkpoint).
    """
    from geolesf.io.atomic import atomic_path, check_outputs, output_lock
    from geolesf.predict.model import load_predict_model

    require("onnx")
    require("onnxruntime")
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise ConfigError(f"--onnx {out}: expected a .onnx path")
    if tile < 1 or not 0 <= overlap < tile:
        raise ConfigError(f"--tile {tile} / --overlap {overlap}: need tile ≥ 1 and 0 ≤ overlap < tile")
    if resolution_cm is not None and not resolution_cm > 0:
        raise ConfigError(f"--resolution {resolution_cm}: expected centimetres per pixel > 0")
    with output_lock(out):
        check_outputs({"checkpoint": checkpoint}, {"--onnx": out}, overwrite=overwrite)
        fmt, digest, extra = _source(checkpoint)
        if fmt == "geolesf-hsi-spectrum/1":
            raise ModelError(f"{checkpoint}: rf/svm spectrum models are scikit-learn estimators, not torch graphs; "
                             "they have no ONNX export here")
        pm = load_predict_model(checkpoint, model_name, options)
        if pm.kind == "dense" and tile % max(1, pm.size_divisor):
            d = pm.size_divisor
            raise ConfigError(f"--tile {tile}: model {pm.name} needs a multiple of {d} (try {max(d, tile - tile % d)})")
        if pm.normalise is not None and pm.normalisation is None:
            raise ModelError(f"{checkpoint}: the input normalisation of model {pm.name} is not recorded as data, "
                             "so an exported model could not be fed correctly")
        res_from = "--resolution" if resolution_cm is not None else ""
        if resolution_cm is None:
            resolution_cm, res_from = training_resolution(extra)
        module = exportable_module(pm)
        meta = geolesf_metadata(pm, fmt, digest)
        if pm.kind == "dense":
            meta.update(deepness_metadata(pm, tile=tile, overlap=overlap, resolution_cm=resolution_cm,
                                          seg_thresh=seg_thresh, seg_small_segment=seg_small_segment))
        with atomic_path(out) as tmp:
            _trace(module, _example(pm, 1, 0), tmp, pm.kind, opset, _HINTS.get(fmt or "", ""))
            nodes = _write_metadata(tmp, meta)
            check = _example(pm, 2, 1, side=96)  # another batch size and tile size than the traced one
            diff = parity(module, tmp, check)
            if not diff <= TOLERANCE:
                raise ModelError(f"model {pm.name}: the exported graph does not reproduce PyTorch (max |Δp| = "
                                 f"{diff:.3g} > {TOLERANCE:g} on a second input): its computation depends on "
                                 "the input in a way tracing cannot record; not written")
            size = tmp.stat().st_size
    return ExportResult(out=out, kind=pm.kind, nodes=nodes, bytes=size, max_abs_diff=diff, metadata=meta,
                        resolution_from=res_from)
