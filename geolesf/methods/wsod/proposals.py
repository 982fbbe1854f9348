"""Object proposals for WSOD: selective search, or precomputed proposal files.

* :func:`selective_search` runs OpenCV's ``cv2.ximgproc.segmentation`` selective search
  (package ``opencv-contrib-python``) on an RGB image, optionally on a downscaled copy
  (``max_side``) for speed, and returns ``x1, y1, x2, y2`` boxes in the original pixel grid.
* :func:`load_proposal_file` reads the two standard precomputed formats:

  - ``.mat`` as distributed for R-CNN / Fast R-CNN (``selective_search_data/voc_2007_trainval.mat``):
    ``images`` (cell of image ids) and ``boxes`` (cell of ``(n, 4)`` arrays, 1-based
    ``y1, x1, y2, x2``) — converted to 0-based ``x1, y1, x2, y2`` as Detectron does;
  - ``.pkl`` as used by Detectron / PCL / NDI (``proposals/selective_search_voc_2007_trainval.pkl``):
    a dict with ``boxes`` (list of ``(n, 4)`` 0-based ``x1, y1, x2, y2``) and ``indexes`` or
    ``ids`` (the image ids), optionally ``scores``. Pickle can run code: only load files you trust.

* :class:`ProposalProvider` picks one of them from a config string (``selective_search`` or a
  file path) and caches results per image id; a missing source is a clear error.
"""

from __future__ import annotations

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
            "install opencv-contrib-python or give precomputed proposals (proposals: FILE.mat | FILE.pkl)"
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


def load_proposal_file(path: str | Path) -> dict[str, np.ndarray]:
    """Image id → ``(n, 4)`` float32 0-based ``x1, y1, x2, y2`` boxes from a ``.mat`` or ``.pkl`` file."""
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
    elif suffix in (".pkl", ".pickle"):
        try:
            with open(path, "rb") as fh:
                raw = pickle.load(fh, encoding="latin1")
        except (pickle.UnpicklingError, EOFError, OSError) as exc:
            raise DataError(f"{path}: not a readable proposal pickle ({exc})") from None
        if not isinstance(raw, dict) or "boxes" not in raw:
            raise DataError(f"{path}: expected a dict with 'boxes' and 'indexes' (or 'ids')")
        key = "indexes" if "indexes" in raw else "ids" if "ids" in raw else None
        if key is None:
            raise DataError(f"{path}: proposal pickle has no 'indexes' or 'ids' entry naming the images")
        ids = [_as_id(v) for v in raw[key]]
        boxes = [np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in raw["boxes"]]
    else:
        raise DataError(f"{path}: unknown proposal format '{suffix}' (expected .mat or .pkl)")
    if len(ids) != len(boxes):
        raise DataError(f"{path}: {len(ids)} image ids but {len(boxes)} box arrays")
    return dict(zip(ids, boxes))


class ProposalProvider:
    """Proposals per image from ``source``: ``selective_search`` or a ``.mat``/``.pkl`` file."""

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
            raise ConfigError("proposals: no proposal source given; use 'selective_search' or a .mat/.pkl file")
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
