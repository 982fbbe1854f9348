"""VOC AP (devkit rules, 11-point and area), CorLoc, and COCO AP through pycocotools."""

from __future__ import annotations

import json

import numpy as np
import pytest

from geolesf.errors import ConfigError
from geolesf.metrics.detection import (
    COCO_STATS,
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
    rec, _, npos = voc_class_pr(dets2, gts2, 0)
    assert npos == 3
    np.testing.assert_allclose(rec, [1 / 3, 1 / 3, 2 / 3, 2 / 3, 1.0])


def test_iou_threshold_uses_inclusive_pixels():
    # 10x10 boxes under the +1 convention; shifted by 3 px -> IoU = 70/130 > 0.5, by 4 px -> 60/140 < 0.5
    assert box_iou([[0, 0, 9, 9]], [[3, 0, 12, 9]])[0, 0] == pytest.approx(70 / 130)
    assert box_iou([[0, 0, 9, 9]], [[4, 0, 13, 9]])[0, 0] == pytest.approx(60 / 140)
    gts = {"a": GroundTruth([[0, 0, 9, 9]], [0])}
    for rule in ("gt", "ge"):
        hit = voc_map({"a": Detections([[3, 0, 12, 9]], [1.0], [0])}, gts, ["x"], iou_rule=rule)
        miss = voc_map({"a": Detections([[4, 0, 13, 9]], [1.0], [0])}, gts, ["x"], iou_rule=rule)
        assert hit["mAP"] == pytest.approx(1.0, abs=1e-12) and miss["mAP"] == 0.0


HALF = [[0, 0, 9, 4]]  # 10 x 5 px inside the 10 x 10 box [0, 0, 9, 9]: IoU = 50 / 100 = 0.5 exactly


def test_iou_exactly_half_is_a_miss_under_gt_and_a_hit_under_ge():
    assert box_iou(HALF, [[0, 0, 9, 9]])[0, 0] == 0.5  # exact in floating point
    gts = {"a": GroundTruth([[0, 0, 9, 9]], [0])}
    dets = {"a": Detections(HALF, [1.0], [0])}
    for use_07 in (True, False):
        strict = voc_map(dets, gts, ["x"], use_07_metric=use_07, iou_rule="gt")
        devkit = voc_map(dets, gts, ["x"], use_07_metric=use_07, iou_rule="ge")
        assert strict["mAP"] == 0.0 and strict["iou_rule"] == "gt"
        assert devkit["mAP"] == pytest.approx(1.0, abs=1e-12) and devkit["iou_rule"] == "ge"
    # the default is the NDI-WSOD / py-faster-rcnn rule (IoU > 0.5)
    assert voc_map(dets, gts, ["x"])["mAP"] == 0.0
    assert corloc(dets, gts, ["x"], iou_rule="gt")["CorLoc"] == 0.0
    assert corloc(dets, gts, ["x"], iou_rule="ge")["CorLoc"] == 1.0
    assert corloc(dets, gts, ["x"])["CorLoc"] == 0.0


def test_iou_exactly_half_on_a_difficult_box_is_ignored_only_under_ge():
    # g0 normal, g1 difficult; d0 hits g0 exactly, d1 has IoU 0.5 with the difficult g1.
    gts = {"a": GroundTruth([[0, 0, 9, 9], [50, 50, 59, 59]], [0, 0], [False, True])}
    dets = {"a": Detections([[0, 0, 9, 9], [50, 50, 59, 54]], [0.9, 0.8], [0, 0])}
    rec, prec, npos = voc_class_pr(dets, gts, 0, iou_rule="ge")
    assert npos == 1
    np.testing.assert_array_equal(rec, [1.0, 1.0])
    np.testing.assert_array_equal(prec, [1.0, 1.0])  # d1 ignored: neither TP nor FP
    rec, prec, _ = voc_class_pr(dets, gts, 0, iou_rule="gt")
    np.testing.assert_array_equal(rec, [1.0, 1.0])
    np.testing.assert_array_equal(prec, [1.0, 0.5])  # d1 misses: FP


def test_iou_rule_is_validated():
    gts = {"a": GroundTruth([[0, 0, 9, 9]], [0])}
    dets = {"a": Detections([[0, 0, 9, 9]], [1.0], [0])}
    for call in (lambda: voc_map(dets, gts, ["x"], iou_rule=">="),
                 lambda: voc_class_pr(dets, gts, 0, iou_rule="gte"),
                 lambda: corloc(dets, gts, ["x"], iou_rule="strict")):
        with pytest.raises(ConfigError, match="iou_rule: expected 'gt'.*or 'ge'"):
            call()


def _rising_case():
    """Class 1 only: FP, TP, TP over two positives -> recall [0, 1/2, 1], precision [0, 1/2, 2/3]."""
    gts = {"a": GroundTruth([[100, 100, 109, 109]], [1]), "b": GroundTruth([[200, 200, 209, 209]], [1])}
    dets = {"a": Detections([[300, 300, 309, 309], [100, 100, 109, 109]], [0.95, 0.85], [1, 1]),
            "b": Detections([[200, 200, 209, 209]], [0.75], [1])}
    return dets, gts


def test_ap_takes_the_max_precision_to_the_right():
    dets, gts = _rising_case()
    rec, prec, npos = voc_class_pr(dets, gts, 1)
    assert npos == 2
    np.testing.assert_allclose(rec, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(prec, [0.0, 0.5, 2 / 3])
    # 11-point: at every t the best precision at recall >= t is 2/3 (the first point's 0 never counts)
    assert voc_ap(rec, prec, use_07_metric=True) == pytest.approx(2 / 3, abs=1e-12)
    # area: the envelope lifts the recall 0 -> 1/2 segment to 2/3 as well (not 1/2 * 1/2 + 1/2 * 2/3)
    assert voc_ap(rec, prec, use_07_metric=False) == pytest.approx(2 / 3, abs=1e-12)


def test_map_over_two_classes_is_the_mean_of_hand_computed_aps():
    d0, g0 = _case()
    d1, g1 = _rising_case()
    gts = {"a": GroundTruth(np.concatenate([g0["a"].boxes, g1["a"].boxes]), [0, 0, 1], [False, True, False]),
           "b": GroundTruth(np.concatenate([g0["b"].boxes, g1["b"].boxes]), [0, 1])}
    dets = {k: Detections(np.concatenate([d0[k].boxes, d1[k].boxes]), np.concatenate([d0[k].scores, d1[k].scores]),
                          np.concatenate([d0[k].labels, d1[k].labels])) for k in ("a", "b")}
    r07 = voc_map(dets, gts, ["c0", "c1"], use_07_metric=True)
    assert r07["AP"] == pytest.approx({"c0": 8.5 / 11, "c1": 2 / 3}, abs=1e-12)
    assert r07["mAP"] == pytest.approx((8.5 / 11 + 2 / 3) / 2, abs=1e-12) and r07["classes_scored"] == 2
    rarea = voc_map(dets, gts, ["c0", "c1"], use_07_metric=False)
    assert rarea["AP"] == pytest.approx({"c0": 0.75, "c1": 2 / 3}, abs=1e-12)
    assert rarea["mAP"] == pytest.approx((0.75 + 2 / 3) / 2, abs=1e-12)


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


def _pycocotools_direct(coco_gt, records):
    """COCOeval called directly (no geolesf code) on the same records."""
    import contextlib
    import io

    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco_gt, coco_gt.loadRes(records), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.shared_data("coco_samples")
def test_coco_perturbed_detections_match_pycocotools_called_directly(shared_data):
    import contextlib
    import io

    from pycocotools.coco import COCO

    ann = shared_data / "coco_samples" / "test_coco.json"
    dets = _coco_gt_as_detections(ann)
    rng = np.random.default_rng(0)
    shaken = {}
    for k, d in dets.items():
        wh = np.stack([d.boxes[:, 2] - d.boxes[:, 0], d.boxes[:, 3] - d.boxes[:, 1]] * 2, 1)
        shaken[k] = Detections(d.boxes + rng.uniform(-0.25, 0.25, d.boxes.shape) * wh,
                               rng.uniform(0.1, 1.0, len(d.scores)), d.labels)
    # the records pycocotools gets directly: x, y, w, h built here, not by coco_results
    records = [{"image_id": int(k), "category_id": 1, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                "score": float(s)} for k, d in shaken.items() for b, s in zip(d.boxes.tolist(), d.scores)]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
    stats = coco_evaluate(ann, coco_results(shaken, [1]))
    direct = _pycocotools_direct(gt, records)
    assert [stats[k] for k in COCO_STATS] == [float(v) for v in direct]
    assert 0.0 < stats["AP"] < stats["AP50"] < 1.0  # perturbed: neither perfect nor empty
    assert coco_evaluate(ann, []) == {k: 0.0 for k in COCO_STATS}


def test_coco_ap_hand_computed_single_box():
    """One 100x100 GT box, one detection of IoU 0.72: matched at IoU thresholds 0.50..0.70 (5 of 10)."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    gt = COCO()
    gt.dataset = {"images": [{"id": 7, "width": 200, "height": 200}],
                  "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [0, 0, 100, 100],
                                   "area": 10000.0, "iscrowd": 0}],
                  "categories": [{"id": 3, "name": "ship"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    stats = coco_evaluate(gt, coco_results({7: Detections([[0, 0, 100, 72]], [0.9], [0])}, [3]))
    assert stats["AP"] == pytest.approx(0.5, abs=1e-12)
    assert stats["AP50"] == pytest.approx(1.0, abs=1e-12) and stats["AP75"] == 0.0
    assert stats["APl"] == pytest.approx(0.5, abs=1e-12)  # area 10000 > 96^2: a large object
    assert stats["APs"] == -1.0 and stats["APm"] == -1.0  # no small/medium objects
    assert stats["AR100"] == pytest.approx(0.5, abs=1e-12)
