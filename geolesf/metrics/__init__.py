"""Evaluation metrics.

- :mod:`geolesf.metrics.classification` — per-pixel classification: OA, AA, Cohen's κ, per-class
  accuracy / precision / recall / F1 / IoU and the confusion matrix.
"""

from geolesf.metrics.classification import classification_metrics, confusion_matrix

__all__ = ["classification_metrics", "confusion_matrix"]
