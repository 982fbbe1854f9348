"""Classification metrics from one confusion matrix ``M`` (rows = truth, columns = prediction).

With ``n = ΣM``:

- OA = ``trace(M) / n``;
- per-class accuracy (producer's accuracy, = recall) ``M_cc / Σ_j M_cj``; AA = its mean over the
  classes present in the truth (the HSI convention, = scikit-learn's balanced accuracy);
- Cohen's κ = ``(OA − p_e) / (1 − p_e)`` with ``p_e = Σ_c row_c · col_c / n²``;
- precision ``M_cc / Σ_i M_ic``, F1, IoU ``M_cc / (row_c + col_c − M_cc)``; macro IoU = mean IoU
  over classes with a non-empty union.

Undefined values (a class absent from both truth and prediction) are ``None`` so that the
result is valid JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from geolesf.errors import DataError


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``(C, C)`` int64 counts, rows = truth, columns = prediction; labels are 0..C-1."""
    y_true = np.asarray(y_true).ravel().astype(np.int64)
    y_pred = np.asarray(y_pred).ravel().astype(np.int64)
    if y_true.shape != y_pred.shape:
        raise DataError(f"y_true has {y_true.size} values, y_pred has {y_pred.size}")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise DataError(
                f"{name} holds class indices {y.min()}..{y.max()}; expected 0..{num_classes - 1}"
            )
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan, dtype=np.float64)
    ok = den > 0
    out[ok] = num[ok] / den[ok]
    return out


def _clean(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def confusion_table(
    cm: np.ndarray, class_names: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray, np.ndarray]:
    """``(cm, names, tp, rows, cols)``: the int64 matrix, one name per class (default ``"0"``, ``"1"``...),
    and as float64 its diagonal, row sums (truth counts) and column sums (prediction counts)."""
    cm = np.asarray(cm, dtype=np.int64)
    c = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    if len(names) != c:
        raise DataError(f"{len(names)} class names given for {c} classes")
    return cm, names, np.diag(cm).astype(np.float64), cm.sum(1).astype(np.float64), cm.sum(0).astype(np.float64)


def metrics_from_confusion(cm: np.ndarray, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """All metrics of :func:`classification_metrics` from a confusion matrix."""
    cm, names, tp, rows, cols = confusion_table(cm, class_names)
    c = cm.shape[0]
    n = cm.sum()
    if n == 0:
        raise DataError("no samples to evaluate (empty test set)")
    oa = tp.sum() / n
    recall = _ratio(tp, rows)
    precision = _ratio(tp, cols)
    f1 = _ratio(2 * tp, rows + cols)
    union = rows + cols - tp
    iou = _ratio(tp, union)
    pe = float((rows * cols).sum()) / float(n) ** 2
    kappa = (oa - pe) / (1 - pe) if pe < 1 else (1.0 if oa == 1 else 0.0)
    per_class = [
        {
            "index": i,
            "name": names[i],
            "accuracy": _clean(recall[i]),
            "precision": _clean(precision[i]) if rows[i] or cols[i] else None,
            "recall": _clean(recall[i]),
            "F1": _clean(f1[i]),
            "IoU": _clean(iou[i]),
            "support": int(rows[i]),
        }
        for i in range(c)
    ]
    # A class predicted but never true has precision 0 (not undefined); one never predicted, 0.
    for i, entry in enumerate(per_class):
        if entry["precision"] is None and rows[i] > 0:
            entry["precision"] = 0.0
    present = rows > 0
    return {
        "OA": float(oa),
        "AA": float(np.mean(recall[present])),
        "kappa": float(kappa),
        "macro_IoU": float(np.mean(iou[union > 0])),
        "num_samples": int(n),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }


def classification_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    num_classes: int,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """OA, AA, kappa, per-class metrics, confusion matrix and macro IoU for labels 0..C-1."""
    return metrics_from_confusion(confusion_matrix(y_true, y_pred, num_classes), class_names)
