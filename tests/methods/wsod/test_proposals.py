"""Selective search on a real VOC image; precomputed .mat / .pkl proposal files; clear errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.io

from geolesf.errors import ConfigError, DataError
from geolesf.methods.wsod.proposals import (
    ProposalProvider,
    clean_boxes,
    load_proposal_file,
    selective_search,
)


@pytest.mark.shared_data("voc_samples")
def test_selective_search_on_real_image(shared_data):
    from PIL import Image

    img = np.asarray(Image.open(shared_data / "voc_samples/mmdet_VOCdevkit/VOC2007/JPEGImages/000001.jpg").convert("RGB"))
    boxes = selective_search(img, max_side=160, max_proposals=300)
    assert 20 < len(boxes) <= 300 and boxes.dtype == np.float32
    h, w = img.shape[:2]
    assert boxes[:, 0].min() >= 0 and boxes[:, 2].max() <= w - 1 and boxes[:, 3].max() <= h - 1
    assert np.all(boxes[:, 2] >= boxes[:, 0]) and np.all(boxes[:, 3] >= boxes[:, 1])
    # boxes are mapped back to the full-resolution grid: some span most of the image
    assert (boxes[:, 2] - boxes[:, 0]).max() > 0.5 * w


def test_mat_proposals_are_converted_from_1based_yxyx(tmp_path):
    images = np.empty((1, 2), dtype=object)
    images[0, 0], images[0, 1] = "000001", "000002"
    boxes = np.empty((1, 2), dtype=object)
    boxes[0, 0] = np.array([[11, 21, 51, 81]], dtype=np.float64)  # y1 x1 y2 x2, 1-based
    boxes[0, 1] = np.array([[1, 1, 5, 5], [2, 3, 4, 6]], dtype=np.float64)
    scipy.io.savemat(tmp_path / "ss.mat", {"images": images, "boxes": boxes})
    props = load_proposal_file(tmp_path / "ss.mat")
    np.testing.assert_array_equal(props["000001"], [[20, 10, 80, 50]])
    assert props["000002"].shape == (2, 4)


def test_pkl_proposals_and_provider(tmp_path):
    data = {"boxes": [np.array([[0, 0, 10, 10], [0, 0, 10, 10], [5, 5, 400, 400]], dtype=np.float32)],
            "indexes": ["000001"], "scores": [np.ones(3)]}
    (tmp_path / "ss.pkl").write_bytes(pickle.dumps(data))
    provider = ProposalProvider(str(tmp_path / "ss.pkl"), min_size=2)
    out = provider("000001", np.zeros((100, 120, 3), np.uint8))
    np.testing.assert_array_equal(out, [[0, 0, 10, 10], [5, 5, 119, 99]])  # deduplicated, clipped
    with pytest.raises(DataError, match="no proposals for image 'zzz'"):
        provider("zzz", np.zeros((10, 10, 3), np.uint8))


def test_missing_or_bad_sources_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="proposal file not found"):
        ProposalProvider(str(tmp_path / "none.mat"))
    (tmp_path / "x.txt").write_text("1 2 3 4")
    with pytest.raises(DataError, match="unknown proposal format"):
        load_proposal_file(tmp_path / "x.txt")
    with pytest.raises(ConfigError, match="no proposal source"):
        ProposalProvider("none")


def test_clean_boxes_drops_tiny():
    out = clean_boxes(np.array([[0, 0, 0, 0], [0, 0, 20, 20]]), 50, 50, min_size=8)
    np.testing.assert_array_equal(out, [[0, 0, 20, 20]])
