"""VOC AP (devkit rules, 11-point and area), CorLoc, and COCO AP through pycocotools."""

from __future__ import annotations

import json

import numpy as np
import pytest

from geolesf.metrics.detection import (
    Detections,
    GroundTruth,
    box_iou,
    coco_evaluate,
    coco_results,
    corloc,
    voc_ap,
    voc_class_pr,
    voc_map,
)


def _case(difficult: bool = True):
    """One class; image a: g1 (normal) + g2 (difficult); image b: g3."""
    gts = {
        "a": GroundTruth([[0, 0, 9, 9], [50, 50, 59, 59]], [0, 0], [False, difficult]),
        "b": GroundTruth([[20, 20, 29, 29]], [0], [False]),
    }
    dets = {
        "a": Detections([[0, 0, 9, 9],       # 0.9 TP (g1)
                         [0, 0, 9, 10],      # 0.8 duplicate of g1 -> FP
                         [50, 50, 59, 59]],  # 0.7 hits the difficult g2 -> ignored
                        [0.9, 0.8, 0.7], [0, 0, 0]),
        "b": Detections([[100, 100, 109, 109],  # 0.6 FP
                         [20, 20, 29, 30]],     # 0.5 TP (g3)
                        [0.6, 0.5], [0, 0]),
    }
    return dets, gts


def test_voc_ap_hand_computed_11point_and_area():
    dets, gts = _case()
    rec, prec, npos = voc_class_pr(dets, gts, 0)
    assert npos == 2  # the difficult box does not count
    # TP, FP, (ignored), FP, TP
    np.testing.assert_allclose(rec, [0.5, 0.5, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(prec, [1.0, 0.5, 0.5, 1 / 3, 0.5])
    # 11-point: recall thresholds 0..0.5 -> max precision 1; 0.6..1.0 -> 0.5
    assert voc_ap(rec, prec, use_07_metric=True) == pytest.approx((6 * 1.0 + 5 * 0.5) / 11)
    # area under the envelope: 0.5 * 1 + 0.5 * 0.5
    assert voc_ap(rec, prec, use_07_metric=False) == pytest.approx(0.75)
    res07 = voc_map(dets, gts, ["thing"], use_07_metric=True)
    resarea = voc_map(dets, gts, ["thing"], use_07_metric=False)
    assert res07["mAP"] == pytest.approx(8.5 / 11) and res07["metric"] == "11point"
    assert resarea["mAP"] == pytest.approx(0.75)


def test_difficult_detection_is_neither_tp_nor_fp():
    dets, gts = _case()
    without = {k: Detections(v.boxes, v.scores, v.labels) for k, v in dets.items()}
    keep = [0, 1]
    without["a"] = Detections(dets["a"].boxes[keep], dets["a"].scores[keep], dets["a"].labels[keep])
    assert voc_map(without, gts, ["x"])["mAP"] == pytest.approx(voc_map(dets, gts, ["x"])["mAP"])
    # The same box not marked difficult: now a TP and a third positive, so AP changes.
    dets2, gts2 = _case(difficult=False)
    rec, prec, npos = voc_class_pr(dets2, gts2, 0)
    assert npos == 3
    np.testing.assert_allclose(rec, [1 / 3, 1 / 3, 2 / 3, 2 / 3, 1.0])


def test_iou_threshold_is_strict_and_uses_inclusive_pixels():
    # 10x10 boxes under the +1 convention; shifted by 3 px -> IoU = 70/130 > 0.5, by 4 px -> 60/140 < 0.5
    assert box_iou([[0, 0, 9, 9]], [[3, 0, 12, 9]])[0, 0] == pytest.approx(70 / 130)
    assert box_iou([[0, 0, 9, 9]], [[4, 0, 13, 9]])[0, 0] == pytest.approx(60 / 140)
    gts = {"a": GroundTruth([[0, 0, 9, 9]], [0])}
    hit = voc_map({"a": Detections([[3, 0, 12, 9]], [1.0], [0])}, gts, ["x"])
    miss = voc_map({"a": Detections([[4, 0, 13, 9]], [1.0], [0])}, gts, ["x"])
    assert hit["mAP"] == pytest.approx(1.0) and miss["mAP"] == 0.0


def test_classes_without_positives_are_not_averaged():
    gts = {"a": GroundTruth([[0, 0, 9, 9]], [1])}
    res = voc_map({"a": Detections([[0, 0, 9, 9]], [0.5], [1])}, gts, ["absent", "present"])
    assert list(res["AP"]) == ["present"]
    assert res["mAP"] == pytest.approx(1.0) and res["classes_scored"] == 1


def test_corloc_per_class_then_mean():
    gts = {
        "a": GroundTruth([[0, 0, 9, 9], [20, 20, 29, 29]], [0, 1]),
        "b": GroundTruth([[0, 0, 9, 9]], [0]),
    }
    tops = {
        "a": Detections([[0, 0, 9, 9], [50, 50, 59, 59], [20, 20, 29, 29]], [0.9, 0.8, 0.1], [0, 1, 1]),
        "b": Detections([[30, 30, 39, 39], [0, 0, 9, 9]], [0.7, 0.6], [0, 0]),  # top box misses
    }
    res = corloc(tops, gts, ["c0", "c1"])
    assert res["per_class"] == {"c0": 0.5, "c1": 0.0}
    assert res["CorLoc"] == pytest.approx(0.25)


def _coco_gt_as_detections(path):
    data = json.loads(path.read_text())
    dets = {}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        d = dets.setdefault(a["image_id"], ([], [], []))
        d[0].append([x, y, x + w, y + h])
        d[1].append(1.0)
        d[2].append(0)
    return {k: Detections(*v) for k, v in dets.items()}


@pytest.mark.shared_data("coco_samples")
def test_coco_ground_truth_as_detections_gives_ap_one(shared_data):
    ann = shared_data / "coco_samples" / "test_coco.json"
    dets = _coco_gt_as_detections(ann)
    stats = coco_evaluate(ann, coco_results(dets, [1]))
    assert stats["AP"] == pytest.approx(1.0)
    assert stats["AP50"] == pytest.approx(1.0) and stats["AP75"] == pytest.approx(1.0)


@pytest.mark.shared_data("coco_samples")
def test_coco_perturbed_detections_score_lower(shared_data):
    ann = shared_data / "coco_samples" / "test_coco.json"
    dets = _coco_gt_as_detections(ann)
    rng = np.random.default_rng(0)
    shaken = {}
    for k, d in dets.items():
        wh = np.stack([d.boxes[:, 2] - d.boxes[:, 0], d.boxes[:, 3] - d.boxes[:, 1]] * 2, 1)
        shaken[k] = Detections(d.boxes + rng.uniform(-0.25, 0.25, d.boxes.shape) * wh,
                               rng.uniform(0.1, 1.0, len(d.scores)), d.labels)
    stats = coco_evaluate(ann, coco_results(shaken, [1]))
    assert 0.0 <= stats["AP"] < 0.9
    assert stats["AP"] < stats["AP50"] + 1e-9
    assert coco_evaluate(ann, [])["AP"] == 0.0
