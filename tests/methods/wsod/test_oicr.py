"""MIST / NGIS seed mining, OICR pseudo-label assignment and losses on hand-made boxes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geolesf.methods.wsod.oicr import (
    Seeds,
    assign_pseudo_labels,
    decode_boxes,
    encode_boxes,
    mine_seeds,
    refine_loss,
)

A = [0, 0, 10, 10]
B = [1, 1, 11, 11]      # IoU(A, B) = 100 / 142 with +1 pixels
C = [30, 30, 40, 40]
D = [31, 30, 41, 40]    # overlaps C
E = [5, 5, 15, 15]      # IoU(A, E) = 36/206 < 0.2 but IoU(B, E) = 49/193 > 0.2
F = [60, 60, 70, 70]


def _boxes_scores():
    boxes = np.array([A, B, C, D, E, F] + [[80 + i, 0, 90 + i, 10] for i in range(6)], dtype=np.float64)
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.55, 0.5] + [0.01] * 6)
    return boxes, s[:, None]


def test_mist_greedy_rule_against_every_earlier_candidate():
    boxes, scores = _boxes_scores()  # 12 proposals, top 50% -> 6 candidates
    seeds = mine_seeds(boxes, scores, np.array([1.0]), top_ratio=0.5, iou_threshold=0.2)
    # A kept (top-1); B dropped (A); C kept; D dropped (C); E dropped: it overlaps B (>0.2), an earlier
    # candidate that was itself dropped -- the literal official rule; F kept.
    np.testing.assert_array_equal(seeds.boxes, [A, C, F])
    np.testing.assert_allclose(seeds.scores, [0.9, 0.7, 0.5])
    assert seeds.classes.tolist() == [0, 0, 0]


def test_mist_per_positive_class_only():
    boxes, s = _boxes_scores()
    scores = np.concatenate([s, s[::-1]], axis=1)
    seeds = mine_seeds(boxes, scores, np.array([0.0, 1.0]), top_ratio=0.5)
    assert set(seeds.classes.tolist()) == {1}
    np.testing.assert_array_equal(seeds.boxes[0], boxes[-1])  # the top box of class 1


def test_ngis_keeps_extra_instances_only_with_high_ndi_similarity():
    boxes, scores = _boxes_scores()
    sim = np.zeros(len(boxes))
    sim[2] = 0.9  # C: mean over the 6 candidates = 0.15, 0.9 > 3 * 0.15
    seeds = mine_seeds(boxes, scores, np.array([1.0]), top_ratio=0.5, similarity=sim)
    np.testing.assert_array_equal(seeds.boxes, [A, C])  # F passes the IoU test but not the NDI test
    no_sim = mine_seeds(boxes, scores, np.array([1.0]), top_ratio=0.5, similarity=np.zeros(len(boxes)))
    np.testing.assert_array_equal(no_sim.boxes, [A])  # top-1 is always kept


def test_assign_pseudo_labels_hand_made():
    seeds = Seeds(np.array([A, C], dtype=float), np.array([0, 1]), np.array([0.9, 0.7]))
    rois = np.array([A, B, [100, 100, 110, 110], [35, 30, 45, 40]], dtype=float)
    a = assign_pseudo_labels(rois, seeds, fg_threshold=0.5)
    # A: itself (class 0 -> label 1); B: IoU 0.70 with A; far box: background (weight of seed 0, argmax of a
    # zero row); [35..45]: IoU 66/176 = 0.375 with C -> background with C's weight.
    assert a.labels.tolist() == [1, 1, 0, 0]
    np.testing.assert_allclose(a.weights, [0.9, 0.9, 0.9, 0.7])
    assert a.seed_index.tolist() == [0, 0, -1, -1]
    empty = assign_pseudo_labels(rois, Seeds(np.zeros((0, 4)), np.zeros(0, int), np.zeros(0)))
    assert empty.labels.tolist() == [0] * 4 and empty.weights.sum() == 0


def test_refine_loss_value():
    prob = torch.tensor([[0.2, 0.8], [0.6, 0.4]])
    loss = refine_loss(prob, torch.tensor([1, 0]), torch.tensor([0.5, 1.0]))
    assert float(loss) == pytest.approx(-(0.5 * math.log(0.8 + 1e-6) + math.log(0.6 + 1e-6)) / 2, rel=1e-6)


def test_box_encoding_round_trip():
    rois = np.array([[10, 20, 50, 80], [0, 0, 9, 9]], dtype=np.float64)
    targets = np.array([[12, 18, 60, 70], [1, 2, 20, 15]], dtype=np.float64)
    deltas = encode_boxes(rois, targets)
    out = decode_boxes(torch.as_tensor(rois), torch.as_tensor(deltas)).numpy()
    np.testing.assert_allclose(out, targets, atol=1e-6)
