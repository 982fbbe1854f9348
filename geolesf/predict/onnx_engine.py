"""``--engine onnxruntime``: a geolesf ``.onnx`` (from ``geolesf export-model``) as a :class:`PredictModel`.

:func:`load_onnx_model` reads the ONNX ``metadata_props`` that :mod:`geolesf.export.onnx` writes
(:data:`GEOLESF_KEYS`: kind, class ids / names / colours, input bands, patch geometry and the input
normalisation) and wraps an ``onnxruntime.InferenceSession`` in an ``nn.Module``
(:class:`OnnxModule`), so the .onnx runs through the same tiled predictor as a PyTorch checkpoint
and writes the same styled, georeferenced COG.

The exported graph takes the *normalised* model input (what the PyTorch model takes) and ends with
a softmax: it outputs class probabilities, as Deepness expects. The predictor wants logits, so
:class:`OnnxModule` returns ``log(p)``; the predictor's softmax turns them back into ``p`` (to
float rounding) and the argmax is the same. The normalisation runs here in numpy, with the same
operations in the same order as the method's own loader (so the inputs are bit-identical), from
the ``geolesf_normalisation`` record (:func:`normaliser`).

onnx and onnxruntime are optional (``pip install geolesf[onnx]``); this module imports them only
when a model is loaded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geolesf.errors import ConfigError, ModelError
from geolesf.predict.model import PredictModel

#: The ``geolesf_format`` of an exported model.
ONNX_FORMAT = "geolesf-onnx/1"
#: geolesf's own metadata keys (values JSON-encoded, like Deepness's): what :func:`load_onnx_model` needs.
GEOLESF_KEYS = (
    "geolesf_format", "geolesf_version", "geolesf_source_format", "geolesf_source_sha256", "geolesf_model",
    "geolesf_kind", "geolesf_class_ids", "geolesf_class_names", "geolesf_colors", "geolesf_in_bands",
    "geolesf_patch_size", "geolesf_padding", "geolesf_size_divisor", "geolesf_normalisation", "geolesf_output",
)
ENGINES = ("torch", "onnxruntime")
INSTALL_HINT = "pip install 'geolesf[onnx]'"
_TINY = 1e-30  # log(0) guard: a probability that underflowed stays the least likely class


def require(module: str) -> Any:
    """Import ``onnx`` or ``onnxruntime``, or a :class:`ConfigError` naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{module} is not installed; ONNX export and --engine onnxruntime need it: "
                          f"{INSTALL_HINT}") from None


def is_onnx_path(checkpoint: Any) -> bool:
    return isinstance(checkpoint, (str, Path)) and str(checkpoint).lower().endswith(".onnx")


def _array(values: Any, dtype: str) -> np.ndarray | None:
    return None if values is None else np.asarray(values, dtype=dtype)


def normaliser(spec: dict[str, Any] | None) -> Callable[[np.ndarray], np.ndarray] | None:
    """The ``(bands, h, w)`` raw → float32 model-input function a ``geolesf_normalisation`` record describes.

    ``{"kind": "bands", "divide", "band_mean", "band_std"}`` (dense models): ``(x / divide - mean) / std``
    per band; ``{"kind": "spectra", "keep", "bands_in", "band_mean", "band_std", "pca_components",
    "pca_mean"}`` (patch models): band selection, z-score, then PCA, on the ``(h, w, bands)`` layout the
    hsi loader uses. Arrays are stored with their dtype (``dtype``), so the arithmetic is the loader's.
    """
    if not spec:
        return None
    dtype = spec.get("dtype", "float32")
    mean, std = _array(spec.get("band_mean"), dtype), _array(spec.get("band_std"), dtype)
    if spec.get("kind") == "bands":
        divide = spec.get("divide")

        def bands(x: np.ndarray) -> np.ndarray:
            x = np.asarray(x, dtype=np.float32)
            if divide is not None:
                x = x / float(divide)
            if mean is not None:
                x = (x - mean[:, None, None]) / std[:, None, None]
            return x.astype(np.float32, copy=False)

        return bands
    if spec.get("kind") == "spectra":
        keep, bands_in = spec.get("keep"), spec.get("bands_in")
        comps, pca_mean = _array(spec.get("pca_components"), dtype), _array(spec.get("pca_mean"), dtype)

        def spectra(x: np.ndarray) -> np.ndarray:
            if keep is not None and len(keep) != bands_in:
                x = np.take(x, keep, axis=0)
            x = np.asarray(x.transpose(1, 2, 0), dtype=np.float32)
            if mean is not None:
                x = ((x - mean) / std).astype(np.float32, copy=False)
            if comps is not None:
                h, w, b = x.shape
                x = ((x.reshape(-1, b) - pca_mean) @ comps.T).reshape(h, w, -1).astype(np.float32)
            return np.ascontiguousarray(x.transpose(2, 0, 1))

        return spectra
    raise ModelError(f"unknown geolesf_normalisation kind {spec.get('kind')!r}")


class OnnxModule(nn.Module):
    """An ``onnxruntime.InferenceSession`` behind ``nn.Module.forward``: tensor in, ``log(probabilities)`` out."""

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session
        self.input_name = session.get_inputs()[0].name
        # an empty parameter: callers that take the device from next(module.parameters()) find one
        self.device_anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feed = {self.input_name: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)}
        probs = self.session.run(None, feed)[0]
        return torch.from_numpy(np.log(np.maximum(probs, _TINY))).to(x.device)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON-decoded ``metadata_props`` of an .onnx file (values that are not JSON stay strings)."""
    onnx = require("onnx")
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: file not found")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and others for a bad file
        raise ModelError(f"{path}: not a readable ONNX model ({exc.__class__.__name__})") from None
    out: dict[str, Any] = {}
    for prop in model.metadata_props:
        try:
            out[prop.key] = json.loads(prop.value)
        except ValueError:
            out[prop.key] = prop.value
    return out


def session(path: str | Path, device: str = "cpu", threads: int | None = None) -> Any:
    """An InferenceSession on the CPU (or CUDA when ``device`` is cuda and onnxruntime has it)."""
    ort = require("onnxruntime")
    providers = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ConfigError(f"--device {device}: this onnxruntime has no CUDA provider "
                              "(pip install onnxruntime-gpu), use --device cpu")
        providers.insert(0, "CUDAExecutionProvider")
    elif torch.device(device).type != "cpu":
        raise ConfigError(f"--device {device}: --engine onnxruntime runs on cpu or cuda")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def load_onnx_model(path: str | Path, model_name: str | None = None, device: str = "cpu") -> PredictModel:
    """A :class:`PredictModel` of a geolesf .onnx: its module runs onnxruntime, the rest is the metadata."""
    from geolesf.predict.model import check_model_name

    path = Path(path)
    meta = read_metadata(path)
    if meta.get("geolesf_format") != ONNX_FORMAT:
        raise ModelError(f"{path}: not an ONNX model exported by geolesf (metadata geolesf_format is "
                         f"{meta.get('geolesf_format')!r}, expected '{ONNX_FORMAT}'); export one with "
                         "'geolesf export-model CKPT --onnx MODEL.onnx'")
    missing = [k for k in GEOLESF_KEYS if k not in meta]
    if missing:
        raise ModelError(f"{path}: geolesf metadata incomplete, missing {', '.join(missing)}")
    check_model_name(path, meta["geolesf_model"], model_name)
    if meta["geolesf_kind"] not in ("dense", "pixel"):
        raise ModelError(f"{path}: geolesf_kind {meta['geolesf_kind']!r} is not dense or pixel")
    return PredictModel(
        module=OnnxModule(session(path, device)), name=str(meta["geolesf_model"]), kind=meta["geolesf_kind"],
        class_ids=[int(i) for i in meta["geolesf_class_ids"]], class_names=[str(n) for n in meta["geolesf_class_names"]],
        colors=list(meta["geolesf_colors"]), sha256=_file_sha256(path), in_bands=meta["geolesf_in_bands"],
        normalise=normaliser(meta["geolesf_normalisation"]), patch_size=int(meta["geolesf_patch_size"]),
        padding=str(meta["geolesf_padding"]), size_divisor=int(meta["geolesf_size_divisor"]),
    )


class PatchBundle:
    """A per-pixel .onnx :class:`PredictModel` with the attributes the whole-cube classifier
    (:func:`geolesf.methods.hsi.inference.classify_cube`) reads from a patch checkpoint: the band selection
    and normalisation both happen in :meth:`normalise` (``select_bands`` passes the cube through)."""

    def __init__(self, pm: PredictModel) -> None:
        from geolesf.colors import hex_to_rgb

        if pm.kind != "pixel":
            raise ConfigError(f"model {pm.name} is a dense model: cubes classified whole need a per-pixel model "
                              "(S²Mamba); give a GeoTIFF scene")
        self.pm, self.model, self.model_name, self.sha256 = pm, pm.module, pm.name, pm.sha256
        self.scene_bands, self.patch_size, self.padding = int(pm.in_bands or 0), pm.patch_size, pm.padding
        self.class_ids, self.class_names = list(pm.class_ids), list(pm.class_names)
        self.colors = [list(hex_to_rgb(c)) for c in pm.colors]
        keep = (pm.normalisation or {}).get("keep")
        self.band_selection = None if keep is None else {"keep": keep}

    def select_bands(self, cube: np.ndarray, axis: int, source: str) -> np.ndarray:
        return cube

    def normalise(self, cube: np.ndarray) -> np.ndarray:
        """``(H, W, bands)`` raw → ``(H, W, features)`` model input."""
        x = self.pm.normalise(cube.transpose(2, 0, 1)) if self.pm.normalise is not None else cube.transpose(2, 0, 1)
        return np.ascontiguousarray(np.asarray(x, dtype=np.float32).transpose(1, 2, 0))


def check_engine(engine: str, checkpoint: Any) -> None:
    """The engine and the checkpoint must agree: .onnx ↔ onnxruntime (no silent switch)."""
    if engine not in ENGINES:
        raise ConfigError(f"--engine {engine}: expected one of {', '.join(ENGINES)}")
    if engine == "torch" and is_onnx_path(checkpoint):
        raise ConfigError(f"--checkpoint {checkpoint} is an ONNX model: add --engine onnxruntime")
    if engine == "onnxruntime" and not is_onnx_path(checkpoint):
        raise ConfigError(f"--engine onnxruntime needs a .onnx model (export one with 'geolesf export-model "
                          f"{checkpoint} --onnx MODEL.onnx'), found --checkpoint {checkpoint}")
