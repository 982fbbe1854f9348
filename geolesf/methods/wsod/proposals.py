"""Object proposals for WSOD: selective search, or precomputed proposal files.

* :func:`selective_search` runs OpenCV's ``cv2.ximgproc.segmentation`` selective search
  (package ``opencv-contrib-python``) on an RGB image, optionally on a downscaled copy
  (``max_side``) for speed, and returns ``x1, y1, x2, y2`` boxes in the original pixel grid.
* :func:`load_proposal_file` reads precomputed proposals; the format comes from the suffix:

  - ``.mat`` as distributed for R-CNN / Fast R-CNN (``selective_search_data/voc_2007_trainval.mat``):
    ``images`` (cell of image ids) and ``boxes`` (cell of ``(n, 4)`` arrays, 1-based
    ``y1, x1, y2, x2``) — converted to 0-based ``x1, y1, x2, y2`` as Detectron does;
  - ``.npz`` (``numpy.savez``, read with ``allow_pickle=False``): one array per image, the
    key the image id, the value ``(n, 4)`` 0-based ``x1, y1, x2, y2``;
  - ``.json``: ``{"IMAGE_ID": [[x1, y1, x2, y2], ...], ...}``, or the Detectron layout
    ``{"boxes": [...], "ids": [...]}`` (``indexes`` accepted for ``ids``);
  - ``.pkl`` as used by Detectron / PCL / NDI (``proposals/selective_search_voc_2007_trainval.pkl``):
    a dict with ``boxes`` (list of ``(n, 4)`` 0-based ``x1, y1, x2, y2``) and ``indexes`` or
    ``ids`` (the image ids), optionally ``scores``. It is read by :class:`_ProposalUnpickler`,
    which admits only numpy arrays, numpy scalars and dtypes and plain containers (dict, list,
    tuple, str, bytes, numbers): a pickle naming any other callable (``os.system``,
    ``builtins.eval``, a class's ``__reduce__``…) is refused before anything in it runs.

* :class:`ProposalProvider` picks one of them from a config string (``selective_search`` or a
  file path) and caches results per image id; a missing source is a clear error.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.errors import ConfigError, DataError


def _ximgproc() -> Any:
    try:
        import cv2

        return cv2.ximgproc.segmentation
    except (ImportError, AttributeError):
        raise ConfigError(
            "proposals: selective search needs OpenCV's contrib modules (cv2.ximgproc), not found; "
            "install opencv-contrib-python or give precomputed proposals (proposals: FILE.mat | FILE.npz | FILE.json | FILE.pkl)"
        ) from None


def clean_boxes(boxes: np.ndarray, width: int, height: int, min_size: int = 2) -> np.ndarray:
    """Clip to the image, drop boxes smaller than ``min_size`` px and exact duplicates (order kept)."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, width - 1)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, height - 1)
    keep = ((b[:, 2] - b[:, 0] + 1) >= min_size) & ((b[:, 3] - b[:, 1] + 1) >= min_size)
    b = b[keep]
    _, first = np.unique(np.round(b).astype(np.int64), axis=0, return_index=True)
    return b[np.sort(first)]


def selective_search(
    image: np.ndarray,
    mode: str = "fast",
    max_side: int | None = 500,
    max_proposals: int = 2000,
    min_size: int = 8,
) -> np.ndarray:
    """Selective-search boxes ``(n, 4)`` float32 ``x1, y1, x2, y2`` for an RGB uint8 image."""
    import cv2

    seg = _ximgproc()
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise DataError(f"selective search expects an (H, W, 3) RGB image, found shape {img.shape}")
    h, w = img.shape[:2]
    scale = 1.0
    if max_side and max(h, w) > max_side:
        scale = max_side / max(h, w)
        img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ss = seg.createSelectiveSearchSegmentation()
    ss.setBaseImage(np.ascontiguousarray(img[:, :, ::-1]))
    if mode == "fast":
        ss.switchToSelectiveSearchFast()
    elif mode == "quality":
        ss.switchToSelectiveSearchQuality()
    elif mode == "single":
        ss.switchToSingleStrategy()
    else:
        raise ConfigError(f"proposals mode must be fast | quality | single, found '{mode}'")
    rects = ss.process().astype(np.float32)
    if len(rects) == 0:
        return np.zeros((0, 4), dtype=np.float32)
    boxes = np.stack([rects[:, 0], rects[:, 1], rects[:, 0] + rects[:, 2] - 1, rects[:, 1] + rects[:, 3] - 1], 1)
    boxes /= scale
    boxes = clean_boxes(boxes, w, h, min_size)
    return boxes[:max_proposals]


def _as_id(value: Any) -> str:
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size == 1 else "".join(map(str, value.reshape(-1)))
    if isinstance(value, bytes):
        value = value.decode()
    return str(value).strip()


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only globals a proposal pickle may name: what numpy needs to rebuild arrays, scalars, dtypes."""
    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    import _codecs

    # bytes in protocol 0-2 pickles come as _codecs.encode(str, 'latin1') or bytes(...)
    table: dict[tuple[str, str], Any] = {("_codecs", "encode"): _codecs.encode}
    for mod in ("builtins", "__builtin__"):
        for cls in (bytes, bytearray, set, frozenset, complex):
            table[(mod, cls.__name__)] = cls
    for mod in ("numpy.core", "numpy._core"):
        table[(f"{mod}.multiarray", "_reconstruct")] = multiarray._reconstruct
        table[(f"{mod}.multiarray", "scalar")] = multiarray.scalar
        if hasattr(numeric, "_frombuffer"):
            table[(f"{mod}.numeric", "_frombuffer")] = numeric._frombuffer
    table[("numpy", "ndarray")] = np.ndarray
    table[("numpy", "dtype")] = np.dtype
    return table


class _ProposalUnpickler(pickle.Unpickler):
    """An unpickler for proposal files that resolves no global outside a fixed numpy allow-list.

    Dicts, lists, tuples, strings, bytes and numbers need no global and load as usual; numpy
    arrays, scalars and dtypes resolve to numpy's own reconstructors. Every other ``module.name``
    (the way a pickle reaches ``os.system`` or any class's ``__reduce__``) raises
    ``UnpicklingError``, so a hostile file fails instead of running code. Persistent ids are refused too.
    """

    def __init__(self, fh: Any) -> None:
        super().__init__(fh, encoding="latin1")
        self._allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load '{module}.{name}': proposal pickles may hold only numpy arrays and "
                "plain containers"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing persistent ids in a proposal pickle")


def _restricted_pickle_load(data: bytes) -> Any:
    """``pickle.load`` through :class:`_ProposalUnpickler` (never runs a callable outside numpy's)."""
    return _ProposalUnpickler(io.BytesIO(data)).load()


def _box_array(path: Path, image_id: str, value: Any) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise DataError(f"{path}: proposals of image '{image_id}' are not numbers") from None
    if arr.size % 4:
        raise DataError(f"{path}: proposals of image '{image_id}' are not (n, 4) boxes (shape {arr.shape})")
    return arr.reshape(-1, 4)


def _from_ids_and_boxes(path: Path, raw: Any, what: str) -> tuple[list[str], list[np.ndarray]]:
    """The Detectron layout: ``{"boxes": [...], "indexes" | "ids": [...]}``."""
    if not isinstance(raw, dict) or "boxes" not in raw:
        raise DataError(f"{path}: expected a dict with 'boxes' and 'indexes' (or 'ids')")
    key = "indexes" if "indexes" in raw else "ids" if "ids" in raw else None
    if key is None:
        raise DataError(f"{path}: proposal {what} has no 'indexes' or 'ids' entry naming the images")
    ids = [_as_id(v) for v in raw[key]]
    boxes = [_box_array(path, i, b) for i, b in zip(ids, raw["boxes"])]
    if len(raw["boxes"]) != len(ids):
        raise DataError(f"{path}: {len(ids)} image ids but {len(raw['boxes'])} box arrays")
    return ids, boxes


def load_proposal_file(path: str | Path) -> dict[str, np.ndarray]:
    """Image id → ``(n, 4)`` float32 0-based ``x1, y1, x2, y2`` boxes from a ``.mat``, ``.npz``,
    ``.json`` or ``.pkl`` file (the pickle read with the restricted :class:`_ProposalUnpickler`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: proposal file not found")
    suffix = path.suffix.lower()
    if suffix == ".mat":
        import scipy.io

        try:
            raw = scipy.io.loadmat(str(path))
        except (ValueError, NotImplementedError, OSError) as exc:
            raise DataError(f"{path}: not a readable MATLAB proposal file ({exc})") from None
        if "boxes" not in raw or "images" not in raw:
            raise DataError(f"{path}: expected variables 'boxes' and 'images', found {sorted(k for k in raw if not k.startswith('__'))}")
        ids = [_as_id(v) for v in np.asarray(raw["images"]).reshape(-1)]
        boxes = [np.asarray(b, dtype=np.float32).reshape(-1, 4)[:, (1, 0, 3, 2)] - 1 for b in
                 np.asarray(raw["boxes"]).reshape(-1)]
    elif suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                ids = list(npz.files)
                boxes = [_box_array(path, k, npz[k]) for k in ids]
        except (ValueError, OSError, EOFError) as exc:
            # allow_pickle=False: an object array (a pickle inside the .npz) is a ValueError here
            raise DataError(f"{path}: not a readable .npz proposal file ({exc})") from None
    elif suffix == ".json":
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: not a readable JSON proposal file ({exc})") from None
        if not isinstance(raw, dict):
            raise DataError(f"{path}: expected a JSON object of image id → boxes")
        if "boxes" in raw and ("ids" in raw or "indexes" in raw):
            ids, boxes = _from_ids_and_boxes(path, raw, "JSON")
        else:
            ids = [str(k) for k in raw]
            boxes = [_box_array(path, k, v) for k, v in raw.items()]
    elif suffix in (".pkl", ".pickle"):
        try:
            raw = _restricted_pickle_load(path.read_bytes())
        except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError, AttributeError,
                IndexError, KeyError, ImportError) as exc:
            msg = str(exc).splitlines()[0][:300] if str(exc) else exc.__class__.__name__
            raise DataError(f"{path}: not a readable proposal pickle ({msg})") from None
        ids, boxes = _from_ids_and_boxes(path, raw, "pickle")
    else:
        raise DataError(f"{path}: unknown proposal format '{suffix}' (expected .mat, .npz, .json or .pkl)")
    if len(ids) != len(boxes):
        raise DataError(f"{path}: {len(ids)} image ids but {len(boxes)} box arrays")
    return dict(zip(ids, boxes))


class ProposalProvider:
    """Proposals per image from ``source``: ``selective_search`` or a ``.mat``/``.npz``/``.json``/``.pkl`` file."""

    def __init__(self, source: str = "selective_search", *, mode: str = "fast", max_side: int | None = 500,
                 max_proposals: int = 2000, min_size: int = 8) -> None:
        self.source = source
        self.kwargs = {"mode": mode, "max_side": max_side, "max_proposals": max_proposals, "min_size": min_size}
        self.max_proposals = max_proposals
        self.min_size = min_size
        self._file: dict[str, np.ndarray] | None = None
        self._cache: dict[str, np.ndarray] = {}
        if source == "selective_search":
            _ximgproc()
        elif source in ("", "none", None):
            raise ConfigError("proposals: no proposal source given; use 'selective_search' or a .mat/.npz/.json/.pkl file")
        else:
            self._file = load_proposal_file(source)

    def __call__(self, image_id: Any, image: np.ndarray) -> np.ndarray:
        key = str(image_id)
        if key in self._cache:
            return self._cache[key]
        h, w = image.shape[:2]
        if self._file is not None:
            if key not in self._file:
                raise DataError(f"{self.source}: no proposals for image '{key}'")
            boxes = clean_boxes(self._file[key], w, h, self.min_size)[: self.max_proposals]
        else:
            boxes = selective_search(image, **self.kwargs)
        if len(boxes) == 0:
            boxes = np.array([[0, 0, w - 1, h - 1]], dtype=np.float32)
        self._cache[key] = boxes
        return boxes
