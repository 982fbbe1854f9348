"""Semantic-segmentation metrics accumulated in one confusion matrix.

Benchmarks (ADE20K, Pascal VOC/Context, COCO-Stuff, aerial tiles) score a model by the mean
intersection-over-union over classes: for each class ``c``, ``IoU_c = M_cc / (row_c + col_c − M_cc)``
where ``M`` sums over *all* images of the split (rows = truth, columns = prediction). Pixels whose
truth is ``ignore_index`` (255 by convention) are skipped. mIoU averages over the classes whose
union is non-empty (those present in the truth or the predictions), the convention of
mmsegmentation and of the VOC devkit; ``mIoU_present`` averages only over classes present in the
truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from geolesf.errors import DataError
from geolesf.metrics.classification import _clean, confusion_table


class SegmentationConfusion:
    """Running ``(C, C)`` confusion matrix over many (truth, prediction) mask pairs."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        if num_classes < 1:
            raise DataError(f"num_classes must be ≥ 1, found {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, truth: Any, pred: Any) -> None:
        """Add one pair of label masks (numpy arrays or tensors of class indices, same shape)."""
        t = np.asarray(truth.cpu() if hasattr(truth, "cpu") else truth).astype(np.int64).ravel()
        p = np.asarray(pred.cpu() if hasattr(pred, "cpu") else pred).astype(np.int64).ravel()
        if t.shape != p.shape:
            raise DataError(f"truth has {t.size} pixels, prediction has {p.size}")
        keep = t != self.ignore_index if self.ignore_index is not None else np.ones_like(t, dtype=bool)
        t, p = t[keep], p[keep]
        c = self.num_classes
        bad_t = (t < 0) | (t >= c)
        if bad_t.any():
            raise DataError(f"truth holds class index {int(t[bad_t][0])}; expected 0..{c - 1} "
                            f"or ignore {self.ignore_index}")
        if ((p < 0) | (p >= c)).any():
            raise DataError(f"prediction holds class indices outside 0..{c - 1}")
        self.matrix += np.bincount(t * c + p, minlength=c * c).reshape(c, c)

    def merge(self, other: SegmentationConfusion) -> None:
        self.matrix += other.matrix

    def compute(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        return segmentation_metrics(self.matrix, class_names)


def segmentation_metrics(cm: np.ndarray, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """mIoU, per-class IoU, pixel accuracy, mean class accuracy from a confusion matrix."""
    cm, names, tp, rows, cols = confusion_table(cm, class_names)
    union = rows + cols - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(rows > 0, tp / rows, np.nan)
    total = cm.sum()
    present = rows > 0

    return {
        "mIoU": _clean(np.nanmean(iou)) if np.isfinite(iou).any() else None,
        "mIoU_present": _clean(np.nanmean(iou[present])) if present.any() else None,
        "pixel_accuracy": _clean(tp.sum() / total) if total else None,
        "mean_accuracy": _clean(np.nanmean(acc)) if np.isfinite(acc).any() else None,
        "per_class_IoU": {n: _clean(v) for n, v in zip(names, iou)},
        "pixels": int(total),
        "confusion_matrix": cm.tolist(),
    }
