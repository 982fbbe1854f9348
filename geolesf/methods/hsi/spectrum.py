"""The ``geolesf-hsi-spectrum/1`` checkpoint of per-pixel scikit-learn models (``rf``, ``svm``).

A ``model.pt`` of this format is the same kind of weights-only dictionary as a patch checkpoint
(:mod:`geolesf.methods.hsi.checkpoint`): model name and arguments, the training band statistics,
class ids / names / colours and an ``extra`` dictionary (split, seed, the resolved config; other
metadata such as kept bands can be added there without a new format). The fitted estimator (and
the fitted PCA, when the run used one) is stored as a ``uint8`` tensor holding a `skops
<https://skops.readthedocs.io>`_ file.

Why skops and not ONNX: skops stores the estimator's own arrays, so a loaded forest or SVM predicts
exactly what the trained one did (a saved RF reproduces the run folder's ``classmap.tif`` pixel
for pixel); skl2onnx converts tree thresholds to float32 and the SVM kernel to ONNX operators,
which can change a few predictions. skops does not unpickle: it rebuilds objects from a JSON
schema and refuses types it is not told to trust. geolesf goes further than skops' defaults: before
loading, every type named in the file's schema must be in :data:`TRUSTED_TYPES` (the estimators
geolesf itself creates, and the numpy/builtin containers they hold); anything else is refused with
a one-line :class:`~geolesf.errors.ModelError` and nothing of the file is built.

For the predictors a loaded checkpoint looks like a ``1×1`` patch model: :class:`SpectrumModule`
is an ``nn.Module`` whose forward takes ``(B, bands, 1, 1)`` (or ``(B, bands)``) and returns
``(B, C)`` scores, the log of the estimator's class probabilities (one-hot for estimators without
``predict_proba``, such as the SVM), adjusted so that their argmax is always the estimator's own
``predict``. Nothing here imports Lightning or training code.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geolesf.errors import ModelError
from geolesf.io.bands import RecordedBands

FORMAT = "geolesf-hsi-spectrum/1"

#: Every type a geolesf spectrum checkpoint may name (``module.Class``): the estimators of
#: :mod:`geolesf.methods.hsi.baselines`, the PCA of :mod:`geolesf.data.transforms`, and the
#: containers and numpy types skops stores their attributes in.
TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._tree.Tree",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.svm._classes.SVC",
    "sklearn.decomposition._pca.PCA",
    "builtins.dict", "builtins.list", "builtins.tuple", "builtins.str", "builtins.int", "builtins.float",
    "builtins.bool", "builtins.NoneType",
    "numpy.ndarray", "numpy.float64", "numpy.float32", "numpy.int64", "numpy.int32", "numpy.bool_",
)

_LOG_FLOOR = 1e-7


def _schema_types(node: Any, found: set[str]) -> set[str]:
    if isinstance(node, dict):
        if "__class__" in node:
            found.add(f"{node.get('__module__')}.{node['__class__']}")
        for value in node.values():
            _schema_types(value, found)
    elif isinstance(node, list):
        for value in node:
            _schema_types(value, found)
    return found


def dump_estimator(obj: Any) -> torch.Tensor:
    """A fitted estimator as a ``uint8`` tensor holding its skops file (refused if it names an
    untrusted type, so that what is saved can be loaded)."""
    import skops.io as sio

    data = sio.dumps(obj)
    _check_types(data, f"{type(obj).__name__} estimator")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _check_types(data: bytes, where: Any) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            schema = json.loads(zf.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise ModelError(f"{where}: the stored estimator is not a skops file ({exc.__class__.__name__})") from None
    bad = sorted(_schema_types(schema, set()) - set(TRUSTED_TYPES))
    if bad:
        raise ModelError(f"{where}: the stored estimator names type {bad[0]!r}, which geolesf does not load "
                         f"(trusted: the scikit-learn estimators geolesf creates)")


def load_estimator(blob: Any, where: Any) -> Any:
    """The estimator of a ``uint8`` skops tensor, built only from :data:`TRUSTED_TYPES`."""
    import skops.io as sio

    if not isinstance(blob, torch.Tensor) or blob.dtype != torch.uint8 or blob.ndim != 1:
        raise ModelError(f"{where}: the stored estimator must be a 1-D uint8 tensor")
    data = blob.numpy().tobytes()
    _check_types(data, where)
    try:
        return sio.loads(data, trusted=list(TRUSTED_TYPES))
    except Exception as exc:  # noqa: BLE001 - a malformed skops file is a malformed checkpoint
        raise ModelError(f"{where}: the stored estimator cannot be loaded ({exc.__class__.__name__}: "
                         f"{str(exc)[:160]})") from None


class SpectrumModule(nn.Module):
    """A fitted estimator as a ``1×1`` patch model: ``(B, bands, 1, 1)`` → ``(B, C)`` scores.

    The scores are ``log(max(p, 1e-7))`` of the estimator's class probabilities (a one-hot of
    ``predict`` when it has no ``predict_proba``), with the predicted class's score raised to the
    next float32 above the row's maximum where float32 rounding would otherwise tie it; so the
    argmax is the estimator's ``predict`` for every pixel and a softmax gives the probabilities.
    """

    def __init__(self, estimator: Any, num_classes: int) -> None:
        super().__init__()
        self.estimator = estimator
        self.num_classes = int(num_classes)
        classes = np.asarray(getattr(estimator, "classes_", np.arange(num_classes)), dtype=np.int64)
        if classes.ndim != 1 or classes.size == 0 or classes.min() < 0 or classes.max() >= num_classes:
            raise ModelError(f"estimator classes {classes.tolist()} do not fit {num_classes} classes")
        self.classes = classes
        # The predictors look up the device of a model's first parameter; this one has no weights.
        self.anchor = nn.Parameter(torch.empty(0), requires_grad=False)

    def scores(self, x: np.ndarray) -> np.ndarray:
        """``(N, bands)`` float32 features → ``(N, C)`` float32 scores (see the class docstring)."""
        from sklearn.ensemble import RandomForestClassifier

        est, n = self.estimator, x.shape[0]
        proba = np.zeros((n, self.num_classes), dtype=np.float64)
        if isinstance(est, RandomForestClassifier):  # its predict is exactly this argmax
            p = est.predict_proba(x)
            pred = self.classes[np.argmax(p, axis=1)]
            proba[:, self.classes] = p
        else:
            pred = np.asarray(est.predict(x), dtype=np.int64)
            if hasattr(est, "predict_proba"):
                proba[:, self.classes] = est.predict_proba(x)
            else:
                proba[np.arange(n), pred] = 1.0
        out = np.log(np.maximum(proba, _LOG_FLOOR)).astype(np.float32)
        rows = np.nonzero(out.argmax(1) != pred)[0]
        if rows.size:
            top = out[rows].max(1)
            out[rows, pred[rows]] = np.nextafter(top, np.float32(np.inf))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1) if x.ndim == 2 else x[:, :, x.shape[2] // 2, x.shape[3] // 2]
        feats = np.ascontiguousarray(flat.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.scores(feats)).to(x.device)


@dataclass
class SpectrumCheckpoint(RecordedBands):
    """A trained per-pixel estimator and what it needs to classify a new cube.

    It has the attributes of :class:`~geolesf.methods.hsi.checkpoint.PatchCheckpoint` the
    predictors read (``model``, ``patch_size`` 1, ``padding``, ``in_bands``, ``normalise``).
    """

    estimator: Any
    model_name: str
    model_args: dict[str, Any]
    band_mean: np.ndarray | None
    band_std: np.ndarray | None
    pca: Any
    """The fitted scikit-learn PCA of the run, or None."""
    class_ids: list[int]
    class_names: list[str]
    colors: list[list[int]]
    extra: dict[str, Any] = field(default_factory=dict)
    in_chans: int | None = None
    path: Path | None = None
    sha256: str | None = None
    patch_size: int = 1
    padding: str = "symmetric"
    kind: str = "spectrum"

    @property
    def model(self) -> SpectrumModule:
        return SpectrumModule(self.estimator, len(self.class_ids))

    @property
    def in_bands(self) -> int:
        return int(self.band_mean.shape[0]) if self.band_mean is not None else int(self.in_chans or 0)

    def normalise(self, cube: np.ndarray) -> np.ndarray:
        """Raw ``(H, W, bands)`` → model features, with the same float64 statistics and operations
        as training (:class:`~geolesf.data.transforms.BandNormalizer`, then the sklearn PCA)."""
        x = np.asarray(cube).astype(np.float32)
        if self.band_mean is not None:
            x = ((x - self.band_mean) / self.band_std).astype(np.float32)
        if self.pca is not None:
            flat = self.pca.transform(x.reshape(-1, x.shape[-1])).astype(np.float32)
            x = flat.reshape(*x.shape[:-1], flat.shape[-1])
        return np.ascontiguousarray(x, dtype=np.float32)


def from_scene(scene: Any, cfg: Any, estimator: Any, args: dict[str, Any]) -> SpectrumCheckpoint:
    """The checkpoint of an estimator fitted on a prepared HSI scene (``train.PreparedScene``)."""
    from geolesf.config import to_dict

    norm = scene.normalizer
    # the bands the features are computed from (those the normaliser / PCA were fitted on)
    bands = (norm.mean.shape[0] if norm is not None else
             scene.pca._pca.n_features_in_ if scene.pca is not None else scene.num_features)
    return SpectrumCheckpoint(
        estimator=estimator, model_name=cfg.model.name, model_args=dict(args),
        band_mean=None if norm is None else np.asarray(norm.mean, dtype=np.float64),
        band_std=None if norm is None else np.asarray(norm.std, dtype=np.float64),
        pca=None if scene.pca is None else scene.pca._pca,
        class_ids=list(scene.class_ids), class_names=list(scene.class_names),
        colors=[list(map(int, c)) for c in scene.class_colors],
        extra={"split": scene.split.name, "seed": int(cfg.trainer.seed), "bands_in": int(scene.cube.bands),
               "config": to_dict(cfg), "bands": scene.info.get("bands")},
        in_chans=int(bands),
    )


def save(path: str | Path, ckpt: SpectrumCheckpoint) -> str:
    """Write a ``weights_only``-loadable ``model.pt`` atomically; returns its sha256."""
    import sklearn

    from geolesf import __version__
    from geolesf.registry import write_checkpoint

    def f64(a: Any) -> Any:
        return None if a is None else torch.from_numpy(np.asarray(a, dtype=np.float64).copy())

    payload = {
        "format": FORMAT,
        "geolesf_version": __version__,
        "sklearn_version": sklearn.__version__,
        "model_name": ckpt.model_name,
        "model_args": dict(ckpt.model_args),
        "estimator": dump_estimator(ckpt.estimator),
        "pca": None if ckpt.pca is None else dump_estimator(ckpt.pca),
        "band_mean": f64(ckpt.band_mean),
        "band_std": f64(ckpt.band_std),
        "in_chans": int(ckpt.in_bands),
        "class_ids": [int(c) for c in ckpt.class_ids],
        "class_names": [str(n) for n in ckpt.class_names],
        "colors": [list(map(int, c)) for c in ckpt.colors],
        "extra": dict(ckpt.extra),
    }
    return write_checkpoint(path, payload)


def load(path: str | Path, expected_sha256: str | None = None) -> SpectrumCheckpoint:
    """Load a spectrum checkpoint (``weights_only=True``; the estimator from trusted types only)."""
    from geolesf.registry import read_checkpoint

    payload, digest, path = read_checkpoint(path)
    if expected_sha256 is not None and digest != expected_sha256:
        from geolesf.errors import ChecksumError

        raise ChecksumError(f"{path}: sha256 mismatch, expected {expected_sha256[:16]}…, found {digest[:16]}…")
    if payload.get("format") != FORMAT:
        raise ModelError(f"{path}: expected a geolesf '{FORMAT}' checkpoint")
    try:
        ckpt = SpectrumCheckpoint(
            estimator=load_estimator(payload["estimator"], path), model_name=str(payload["model_name"]),
            model_args=dict(payload["model_args"]), band_mean=_array(payload["band_mean"]),
            band_std=_array(payload["band_std"]),
            pca=None if payload["pca"] is None else load_estimator(payload["pca"], path),
            class_ids=[int(c) for c in payload["class_ids"]], class_names=[str(n) for n in payload["class_names"]],
            colors=[list(map(int, c)) for c in payload["colors"]], extra=dict(payload["extra"]),
            in_chans=int(payload["in_chans"]), path=path, sha256=digest,
        )
        if ckpt.in_chans is None or ckpt.in_chans < 1:
            raise ValueError(f"in_chans must be a positive band count, found {ckpt.in_chans}")
        stats = [a.shape for a in (ckpt.band_mean, ckpt.band_std) if a is not None]
        if stats not in ([], [(ckpt.in_chans,)] * 2):
            raise ValueError("band statistics must both be 1-D of in_chans values, or both absent")
        if not ckpt.class_ids or not len(ckpt.class_ids) == len(ckpt.class_names) == len(ckpt.colors):
            raise ValueError("class ids, names and colours must be non-empty lists of one length")
        ckpt.model  # noqa: B018 - checks the estimator's classes against the class list
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: malformed '{FORMAT}' checkpoint ({exc.__class__.__name__}: {exc})") from None
    return ckpt


def _array(t: Any) -> np.ndarray | None:
    if t is not None and not isinstance(t, torch.Tensor):
        raise TypeError(f"expected a tensor or None, found {type(t).__name__}")
    return None if t is None else t.numpy().astype(np.float64)
