"""Box pseudo-masks and recursive rounds (Simple Does It, geolesf.methods.unet.box_rounds), by hand on tiny scenes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from geolesf.methods.unet.box_rounds import (
    IGNORE,
    initial_target,
    inner_ranges,
    prior_corrected,
    pseudo_target,
    random_walk_probabilities_in_boxes,
    round_epochs,
    scene_probabilities,
)
from geolesf.methods.unet.boxes import BoxObjective, SceneBoxes

I = IGNORE


def test_inner_box_is_the_centred_fifth_of_the_area():
    # a 5 × 5 box (cols 2..6, rows 1..5): side 5·√0.2 = 2.24 → 2 px, offset (5 − 2) // 2 = 1
    assert inner_ranges(np.array([[2, 1, 6, 5]]), 0.2).tolist() == [[3, 2, 4, 3]]
    # a 10 × 4 box: sides round(10·0.447) = 4, round(4·0.447) = 2 → cols 3..6, rows 1..2
    assert inner_ranges(np.array([[0, 0, 9, 3]]), 0.2).tolist() == [[3, 1, 6, 2]]
    assert inner_ranges(np.array([[0, 0, 9, 3]]), 1.0).tolist() == [[0, 0, 9, 3]]
    assert inner_ranges(np.array([[4, 4, 4, 4]]), 0.2).tolist() == [[4, 4, 4, 4]]  # never empty


def test_initial_target_box_i():
    t = initial_target(np.array([[2, 1, 6, 5]]), np.array([1]), (7, 9), background=0, inner=0.2)
    expect = np.zeros((7, 9), dtype=np.int64)
    expect[1:6, 2:7] = I
    expect[2:4, 3:5] = 1
    assert t.tolist() == expect.tolist()
    # two overlapping boxes: the smaller one (class 2) is painted over the larger one (class 1)
    t = initial_target(np.array([[0, 0, 5, 5], [4, 4, 6, 6]]), np.array([1, 2]), (7, 7), background=0, inner=1.0)
    assert t[0, 0] == 1 and t[4, 4] == 2 and t[6, 6] == 2 and t[5, 0] == 1 and t[6, 0] == 0


def _square_scene():
    """A 10 × 12 dark scene with a bright 3 × 4 square (rows 3..5, cols 4..7) inside a box rows 2..6, cols 3..8."""
    image = np.zeros((1, 10, 12), dtype=np.float32)
    image[0, 3:6, 4:8] = 1.0
    ranges = np.array([[3, 2, 8, 6]])
    return image, ranges


def test_pseudo_mask_of_a_bright_square_in_a_box_is_the_square():
    image, ranges = _square_scene()
    p1 = np.where(image[0] > 0.5, 0.9, 0.2)  # a prediction that follows the image: object where bright
    p1[0, 0] = 0.95  # a confident "object" outside every box is still background (box enforcing)
    probs = np.stack([1 - p1, p1]).astype(np.float32)
    initial = initial_target(ranges, np.array([1]), (10, 12), 0, 0.2)
    target, stats = pseudo_target(probs, ranges, np.array([1]), initial, 0, min_fill=0.3)
    expect = np.zeros((10, 12), dtype=np.int64)
    expect[3:6, 4:8] = 1
    assert target.tolist() == expect.tolist()
    assert stats["boxes_reset"] == 0 and stats["box_pixels_object"] == pytest.approx(12 / 30)
    # the square fills 12 / 30 = 0.4 of the box: a min_fill above that resets the box to its round-0 labels
    target, stats = pseudo_target(probs, ranges, np.array([1]), initial, 0, min_fill=0.41)
    assert stats["boxes_reset"] == 1 and target.tolist() == initial.tolist()


def test_pseudo_mask_ignores_unsure_and_disallowed_classes():
    probs = np.zeros((3, 4, 4), dtype=np.float32)
    probs[0] = 1.0  # background everywhere ...
    probs[:, 1, 1] = [0.1, 0.8, 0.1]  # ... class 1 at (1, 1), in the box: kept
    probs[:, 1, 2] = [0.1, 0.1, 0.8]  # class 2 has no box here: ignored
    probs[:, 2, 1] = [0.3, 0.6, 0.1]  # class 1 but below the confidence 0.7: ignored
    ranges = np.array([[1, 1, 2, 2]])
    initial = initial_target(ranges, np.array([1]), (4, 4), 0, 1.0)
    target, _ = pseudo_target(probs, ranges, np.array([1]), initial, 0, min_fill=0.25, confidence=0.7)
    assert target.tolist() == [[0, 0, 0, 0], [0, 1, I, 0], [0, I, 0, 0], [0, 0, 0, 0]]


def test_prior_correction_undoes_class_weights():
    # weights (1, 3): (0.5, 0.5) → ∝ (0.5, 0.5 / 3) → (0.75, 0.25); (0.1, 0.9) → ∝ (0.1, 0.3) → (0.25, 0.75)
    probs = np.array([[[0.5, 0.1]], [[0.5, 0.9]]], dtype=np.float32)
    out = prior_corrected(probs, np.array([1.0, 3.0]))
    assert np.allclose(out[:, 0, 0], [0.75, 0.25]) and np.allclose(out[:, 0, 1], [0.25, 0.75])
    assert np.allclose(prior_corrected(probs, np.array([2.0, 2.0])), probs)


def test_round_epochs():
    assert round_epochs(30, 2) == [10, 20]
    assert round_epochs(2, 5) == [1]
    assert round_epochs(1, 2) == [] and round_epochs(10, 0) == []
    # start 0.5: the first round after half the epochs, the rest evenly over the second half
    assert round_epochs(30, 2, 0.5) == [15, 22] and round_epochs(15, 1, 0.5) == [8]


def test_scene_probabilities_tiles_and_pads():
    torch.manual_seed(0)
    model = torch.nn.Conv2d(1, 2, 1)  # per pixel: tiling cannot change the result
    image = np.random.default_rng(0).normal(size=(1, 5, 7)).astype(np.float32)
    with torch.no_grad():
        whole = model(torch.from_numpy(image)[None]).softmax(1)[0].numpy()
    assert np.allclose(scene_probabilities(model, image, tile=3), whole, atol=1e-6)
    model.size_divisor = 4  # padded to 8 × 8 per tile and cropped back
    assert np.allclose(scene_probabilities(model, image, tile=4), whole, atol=1e-6)


class _Bright(torch.nn.Module):
    """A fixed 'network': class-1 logit = 8 × (band − 0.5), class 0 = 0 (object where the image is bright)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), 8 * (x - 0.5)], 1)


def test_recursive_objective_rewrites_the_target_at_the_round_epochs():
    image, ranges = _square_scene()
    obj = BoxObjective(background=0, mode="recursive", rounds=1, inner=0.2, min_fill=0.3)
    obj.scene = SceneBoxes(ranges=ranges, class_ids=np.array([1]), pixel_boxes=ranges + [0, 0, 1, 1])
    obj.channels, obj.class_ids = np.array([1]), [0, 1]
    initial = initial_target(ranges, np.array([1]), (10, 12), 0, 0.2)
    valid = np.ones((10, 12), dtype=bool)
    valid[9] = False  # no image data: stays unlabelled
    state = SimpleNamespace(model=_Bright(), image=image, rasters={"target": np.where(valid, initial, I),
                                                                   "valid": valid},
                            class_ids=[0, 1], device="cpu", chip=8, epochs=4)
    obj.on_epoch_end(0, state)
    obj.on_epoch_end(1, state)  # not a round epoch (rounds=1 of 4 epochs → epoch 2)
    assert state.rasters["target"].tolist() == np.where(valid, initial, I).tolist()
    obj.on_epoch_end(2, state)
    expect = np.zeros((10, 12), dtype=np.int64)
    expect[3:6, 4:8] = 1
    expect[9] = I
    assert state.rasters["target"].tolist() == expect.tolist()
    assert obj.report()["rounds"][0]["epoch"] == 2
    logits = torch.randn(1, 2, 4, 4)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    loss, _ = obj.loss(logits, None, {"target": target})
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, target).item())


def test_class_weights_follow_the_pseudo_labels():
    """Balanced weights of the old target (8 background, 2 object: 10/16, 10/4) → those of the new (6, 4):
    10/12, 10/8."""
    obj = BoxObjective(background=0, mode="recursive")
    obj.class_weights = torch.tensor([10 / 16, 10 / 4])
    old = np.array([0] * 8 + [1] * 2 + [I] * 3)
    new = np.array([0] * 6 + [1] * 4 + [I] * 3)
    obj._reweight(old, new)
    assert torch.allclose(obj.class_weights, torch.tensor([10 / 12, 10 / 8]))


def test_random_walk_round_zero_of_a_bright_square_in_a_box_is_the_square():
    """init randomwalk: Box^i seeds (box centre = object, outside = background) spread by the random walk inside
    the box stop at the square's edges: the pseudo-mask is the square, the rest of the box background."""
    image = np.zeros((1, 12, 14), dtype=np.float32)
    image[0, 3:7, 4:9] = 1.0  # the bright square: rows 3..6, columns 4..8
    ranges = np.array([[3, 2, 9, 7]])  # the box: columns 3..9, rows 2..7 (a 1-px dark ring around the square)
    seeds = initial_target(ranges, np.array([1]), (12, 14), 0, 0.2)
    assert (seeds[3:7, 4:9] == 1).sum() == 9  # the centre fifth (7·√0.2 → 3 by 6·√0.2 → 3 px) is in the square
    probs = random_walk_probabilities_in_boxes(image, seeds, ranges, 2, beta=10.0)
    target, stats = pseudo_target(probs, ranges, np.array([1]), seeds, 0, min_fill=0.3, confidence=0.5)
    expect = np.zeros((12, 14), dtype=np.int64)
    expect[3:7, 4:9] = 1
    assert target.tolist() == expect.tolist()
    assert stats["boxes_reset"] == 0 and stats["box_pixels_object"] == pytest.approx(20 / 42)
