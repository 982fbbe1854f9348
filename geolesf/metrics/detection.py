"""Detection metrics: PASCAL VOC AP / mAP (11-point and all-point), CorLoc, COCO AP via pycocotools.

VOC AP follows the devkit rules:

* detections of one class are sorted by descending score (ties keep their input order) and
  each is matched to the ground-truth box of the same image with the largest IoU;
* IoU uses the devkit's inclusive pixel convention (``w = x2 - x1 + 1``; ``pixel_offset=1``);
* a detection *hits* its best box when the IoU passes the threshold (0.5) under ``iou_rule``:
  a hit on a *difficult* box is ignored (neither TP nor FP); on a non-difficult box not yet
  matched: TP; on one already matched: FP (a duplicate detection); no hit: FP;
* recall is TP / (number of non-difficult boxes); AP is either the **11-point** interpolated
  value (mean over t ∈ {0, 0.1, …, 1} of the maximum precision at recall ≥ t; VOC2007, the WSOD
  convention, ``use_07_metric=True``) or the **area** under the monotone precision envelope
  (VOC2010+, all points).

The matching rule (``iou_rule``) is where the references differ, and only at IoU exactly 0.5:

* ``"ge"`` — IoU ≥ 0.5: the official PASCAL VOC MATLAB devkit (``VOCevaldet.m``,
  ``if ovmax>=VOCopts.minoverlap``) and the wording of methods.md;
* ``"gt"`` — IoU > 0.5: the Python port in py-faster-rcnn's ``voc_eval.py``
  (``if ovmax > ovthresh``), inherited by OICR / PCL and by the **NDI-WSOD official code**
  (``GC-WSL/NDI``: ``lib/datasets/voc_eval.py`` for mAP, run by default since
  ``voc_dataset_evaluator.evaluate_boxes`` has ``use_matlab=False``, and ``lib/datasets/dis_eval.py``
  for CorLoc, also ``ovmax > ovthresh``). ``"gt"`` is therefore the default here, for AP and
  CorLoc alike; pass ``iou_rule="ge"`` for the MATLAB devkit's numbers.

A detection with IoU exactly 0.5 to its only ground-truth box scores AP 0 under ``"gt"`` and
AP 1 under ``"ge"``.

CorLoc (methods.md "Segmentation and detection metrics"): for every (image, positive class)
pair, 1 when the top-scoring detection of that class hits (``iou_rule``) any ground-truth box of
that class; averaged per class, then over classes. As in PCL's ``dis_eval``, difficult boxes
count as ground truth here (the image is positive for the class either way).

COCO AP is never re-implemented: :func:`coco_evaluate` hands the detections to
``pycocotools.cocoeval.COCOeval(gt, dt, "bbox")``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geolesf.errors import ConfigError, DataError


IOU_RULES = {"gt": "IoU > threshold (py-faster-rcnn / OICR / PCL / NDI-WSOD voc_eval.py)",
             "ge": "IoU >= threshold (PASCAL VOC MATLAB devkit VOCevaldet.m)"}
DEFAULT_IOU_RULE = "gt"


def check_iou_rule(rule: str) -> str:
    """``rule`` if it is ``"gt"`` or ``"ge"``, else a one-line :class:`ConfigError`."""
    if rule not in IOU_RULES:
        raise ConfigError(f"iou_rule: expected 'gt' (IoU > 0.5, py-faster-rcnn/NDI-WSOD) or 'ge' "
                          f"(IoU >= 0.5, VOC MATLAB devkit), found {rule!r}")
    return rule


def iou_hit(iou: Any, threshold: float, rule: str = DEFAULT_IOU_RULE) -> Any:
    """Whether ``iou`` passes ``threshold`` under ``rule`` (``"gt"``: ``>``, ``"ge"``: ``>=``)."""
    return iou >= threshold if check_iou_rule(rule) == "ge" else iou > threshold


@dataclass
class GroundTruth:
    """The boxes of one image: ``boxes (n, 4)`` x1, y1, x2, y2; ``labels (n,)`` class indices."""

    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        diff = np.asarray(self.difficult, dtype=bool).reshape(-1)
        self.difficult = diff if diff.size == len(self.labels) else np.zeros(len(self.labels), dtype=bool)
        if len(self.boxes) != len(self.labels):
            raise DataError(f"ground truth has {len(self.boxes)} boxes but {len(self.labels)} labels")


@dataclass
class Detections:
    """Detections of one image: ``boxes (n, 4)``, ``scores (n,)``, ``labels (n,)`` class indices."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if not (len(self.boxes) == len(self.scores) == len(self.labels)):
            raise DataError(f"detections: {len(self.boxes)} boxes, {len(self.scores)} scores, "
                            f"{len(self.labels)} labels; expected equal counts")


def box_iou(a: np.ndarray, b: np.ndarray, pixel_offset: float = 1.0) -> np.ndarray:
    """IoU matrix ``(len(a), len(b))``; ``pixel_offset=1`` is the VOC inclusive-pixel convention."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + pixel_offset
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + pixel_offset
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[:, 2] - a[:, 0] + pixel_offset) * (a[:, 3] - a[:, 1] + pixel_offset)
    area_b = (b[:, 2] - b[:, 0] + pixel_offset) * (b[:, 3] - b[:, 1] + pixel_offset)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = True) -> float:
    """AP from a PR curve: 11-point interpolation (VOC2007) or the area under the envelope."""
    rec = np.asarray(recall, dtype=np.float64)
    prec = np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            above = rec >= t
            ap += (float(np.max(prec[above])) if above.any() else 0.0) / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def voc_class_pr(
    detections: Mapping[Any, Detections],
    ground_truth: Mapping[Any, GroundTruth],
    cls: int,
    iou_threshold: float = 0.5,
    pixel_offset: float = 1.0,
    iou_rule: str = DEFAULT_IOU_RULE,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Recall and precision arrays of class ``cls`` and its number of non-difficult boxes."""
    check_iou_rule(iou_rule)
    gt_boxes, gt_diff, used = {}, {}, {}
    npos = 0
    for image_id, gt in ground_truth.items():
        keep = gt.labels == cls
        gt_boxes[image_id] = gt.boxes[keep]
        gt_diff[image_id] = gt.difficult[keep]
        used[image_id] = np.zeros(int(keep.sum()), dtype=bool)
        npos += int((~gt.difficult[keep]).sum())
    ids, scores, boxes = [], [], []
    for image_id, det in detections.items():
        keep = det.labels == cls
        ids.extend([image_id] * int(keep.sum()))
        scores.append(det.scores[keep])
        boxes.append(det.boxes[keep])
    if not ids:
        return np.zeros(0), np.zeros(0), npos
    scores_all = np.concatenate(scores)
    boxes_all = np.concatenate(boxes)
    order = np.argsort(-scores_all, kind="stable")
    tp = np.zeros(len(order))
    fp = np.zeros(len(order))
    for d, k in enumerate(order):
        image_id = ids[k]
        candidates = gt_boxes.get(image_id)
        if candidates is None or len(candidates) == 0:
            fp[d] = 1
            continue
        ious = box_iou(boxes_all[k][None], candidates, pixel_offset)[0]
        j = int(np.argmax(ious))
        if iou_hit(ious[j], iou_threshold, iou_rule):
            if gt_diff[image_id][j]:
                continue
            if not used[image_id][j]:
                tp[d] = 1
                used[image_id][j] = True
            else:
                fp[d] = 1
        else:
            fp[d] = 1
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / max(npos, 1) if npos > 0 else np.zeros_like(tp)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return recall, precision, npos


def voc_map(
    detections: Mapping[Any, Detections],
    ground_truth: Mapping[Any, GroundTruth],
    class_names: Sequence[str],
    *,
    use_07_metric: bool = True,
    iou_threshold: float = 0.5,
    pixel_offset: float = 1.0,
    iou_rule: str = DEFAULT_IOU_RULE,
) -> dict[str, Any]:
    """Per-class AP and mAP over the classes that have at least one non-difficult box.

    ``iou_rule``: ``"gt"`` (IoU > 0.5; py-faster-rcnn's ``voc_eval.py`` as used by OICR, PCL and
    the NDI-WSOD official evaluation; the default) or ``"ge"`` (IoU ≥ 0.5; the VOC MATLAB devkit).
    Returns ``{"mAP", "AP": {name: ap}, "metric": "11point"|"area", "classes_scored", "iou_rule"}``.
    """
    check_iou_rule(iou_rule)
    aps: dict[str, float] = {}
    for c, name in enumerate(class_names):
        rec, prec, npos = voc_class_pr(detections, ground_truth, c, iou_threshold, pixel_offset, iou_rule)
        if npos == 0:
            continue
        aps[name] = voc_ap(rec, prec, use_07_metric) if len(rec) else 0.0
    return {
        "mAP": float(np.mean(list(aps.values()))) if aps else float("nan"),
        "AP": aps,
        "metric": "11point" if use_07_metric else "area",
        "classes_scored": len(aps),
        "iou_rule": iou_rule,
    }


def corloc(
    detections: Mapping[Any, Detections],
    ground_truth: Mapping[Any, GroundTruth],
    class_names: Sequence[str],
    iou_threshold: float = 0.5,
    pixel_offset: float = 1.0,
    iou_rule: str = DEFAULT_IOU_RULE,
) -> dict[str, Any]:
    """Correct localisation: per class, the share of positive images whose top box hits a GT box.

    ``iou_rule`` as in :func:`voc_map`; the default ``"gt"`` is PCL's / NDI-WSOD's ``dis_eval``
    (``ovmax > ovthresh``), ``"ge"`` the "IoU ≥ 0.5" wording of methods.md.
    """
    check_iou_rule(iou_rule)
    hits: dict[int, list[int]] = {}
    for image_id, gt in ground_truth.items():
        det = detections.get(image_id)
        for c in np.unique(gt.labels):
            c = int(c)
            ok = 0
            if det is not None and np.any(det.labels == c):
                mine = det.labels == c
                top = det.boxes[mine][int(np.argmax(det.scores[mine]))]
                best = float(np.max(box_iou(top[None], gt.boxes[gt.labels == c], pixel_offset)))
                ok = int(iou_hit(best, iou_threshold, iou_rule))
            hits.setdefault(c, []).append(ok)
    per_class = {class_names[c]: float(np.mean(v)) for c, v in sorted(hits.items())}
    return {"CorLoc": float(np.mean(list(per_class.values()))) if per_class else float("nan"),
            "per_class": per_class, "iou_rule": iou_rule}


# ------------------------------------------------------------------------------------------ COCO


def coco_results(
    detections: Mapping[int, Detections], category_ids: Sequence[int]
) -> list[dict[str, Any]]:
    """COCO result records (``bbox`` as x, y, w, h) from per-image detections with class indices."""
    out = []
    for image_id, det in detections.items():
        for box, score, label in zip(det.boxes, det.scores, det.labels):
            x1, y1, x2, y2 = (float(v) for v in box)
            out.append({"image_id": int(image_id), "category_id": int(category_ids[int(label)]),
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    return out


COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def coco_evaluate(coco_gt: Any, results: Iterable[dict[str, Any]], image_ids: Sequence[int] | None = None,
                  verbose: bool = False) -> dict[str, float]:
    """``COCOeval(gt, dt, "bbox")`` on result records; returns AP, AP50, AP75, APs/m/l and ARs.

    ``coco_gt`` is a ``pycocotools.coco.COCO`` or the path of an annotation JSON. With no
    detections at all every statistic is 0 (pycocotools cannot load an empty result list).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not isinstance(coco_gt, COCO):
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO(str(coco_gt))
    results = list(results)
    if not results:
        return {k: 0.0 for k in COCO_STATS}
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        if image_ids is not None:
            ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(COCO_STATS, ev.stats)}
