"""NDI-WSOD forward/backward on a real VOC image with a tiny backbone; toy two-class run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geolesf.registry import create_model, list_models


def _voc_sample(shared_data):
    from geolesf.data.benchmarks.voc_det import VOCDetection

    return VOCDetection(shared_data / "voc_samples" / "mmdet_VOCdevkit", "2007", split=None)[0]


def test_registered():
    assert "ndi-wsod" in list_models()


@pytest.mark.shared_data("voc_samples")
def test_real_image_forward_backward_tiny_backbone(shared_data):
    from geolesf.methods.wsod.proposals import selective_search

    torch.manual_seed(0)
    item = _voc_sample(shared_data)
    rois_np = selective_search(item["image"], max_side=160, max_proposals=120)
    # a low tau so that NDI collects negatives already with random weights
    model = create_model("ndi-wsod", num_classes=20, backbone="tiny", width=16, hidden=32, ndi_tau=1e-5)
    x = model.preprocess(item["image"][::2, ::2])
    rois = torch.as_tensor(rois_np / 2)
    labels = torch.as_tensor(item["image_labels"])
    out = model(x, rois)
    assert out["mil_score"].shape == (len(rois), 20)
    assert len(out["refine"]) == 3 and out["refine"][0].shape == (len(rois), 21)
    assert out["frcnn_bbox"].shape == (len(rois), 84)
    torch.testing.assert_close(out["refine"][1].sum(1), torch.ones(len(rois)))
    losses = model.losses(out, rois, labels)
    assert set(losses) == {"mil", "ncl", "refine0", "refine1", "refine2", "nice", "frcnn_cls", "frcnn_box"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert int(model.ndi.count.sum()) > 0
    # image labels (dog, person) never receive negatives
    assert model.ndi.count[[11, 14]].tolist() == [0, 0]
    sum(losses.values()).backward()
    assert model.body[0].weight.grad.abs().sum() > 0
    assert model.mil.fc_det.weight.grad.abs().sum() > 0
    # a second image now sees a non-empty memory: NCL is active
    out2 = model(x, rois)
    assert float(model.losses(out2, rois, labels)["ncl"].detach()) > 0


@pytest.mark.shared_data("voc_samples")
def test_detect_returns_scores_and_boxes_in_image_frame(shared_data):
    torch.manual_seed(0)
    item = _voc_sample(shared_data)
    model = create_model("ndi-wsod", num_classes=20, backbone="tiny", width=16, hidden=32).eval()
    h, w = item["image"].shape[:2]
    rois = np.array([[10, 10, 100, 200], [0, 0, w - 1, h - 1], [50, 60, 300, 400]], dtype=np.float32)
    scores, boxes = model.detect(item["image"], rois, scales=(120, 160), flip=True)
    assert scores.shape == (3, 21) and boxes.shape == (3, 84)
    np.testing.assert_allclose(scores.sum(1), 1.0, atol=1e-5)
    b = boxes.reshape(3, 21, 4)
    assert b[..., 0].min() >= 0 and b[..., 2].max() <= w - 1 and b[..., 3].max() <= h - 1
    # zero-initialised box regression: the regressed boxes stay close to the proposals
    np.testing.assert_allclose(b[:, 5], rois, atol=3.0)


def test_toy_two_classes_ten_proposals_learns():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    rois = torch.as_tensor(np.array([[x, y, x + 15, y + 15] for x in (0, 16, 32, 48) for y in (0, 24)][:8]
                                    + [[0, 0, 63, 63], [8, 8, 40, 40]], dtype=np.float32))
    model = create_model("ndi-wsod", num_classes=2, backbone="tiny", width=8, hidden=16, dropout=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    labels = torch.tensor([1.0, 0.0])
    x = model.preprocess(image) / 100
    first = None
    for _ in range(15):
        losses = model.losses(model(x, rois), rois, labels)
        loss = sum(losses.values())
        first = float(losses["mil"].detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(losses["mil"].detach()) < first


def test_vgg16_dilated_body_stride8_frozen_conv12_and_local_weights(tmp_path):
    from geolesf.methods.wsod.backbones import vgg16_dilated

    torch.manual_seed(0)
    model = create_model("ndi-wsod", num_classes=3, backbone="vgg16", hidden=32)
    frozen = [p.requires_grad for p in model.body[:10].parameters()]
    trainable = [p.requires_grad for p in model.body[10:].parameters()]
    assert not any(frozen) and all(trainable)
    with torch.no_grad():
        assert model.body(torch.zeros(1, 3, 64, 48)).shape == (1, 512, 8, 6)
    donor = vgg16_dilated()
    torch.save({f"features.{k}": v for k, v in donor.state_dict().items()}, tmp_path / "vgg16.pth")
    loaded = create_model("ndi-wsod", num_classes=3, backbone="vgg16", hidden=32,
                          backbone_weights=str(tmp_path / "vgg16.pth"))
    torch.testing.assert_close(loaded.body[28].weight, donor[28].weight)


def test_missing_backbone_weights_is_a_model_error(tmp_path):
    import pytest

    from geolesf.errors import ModelError

    with pytest.raises(ModelError, match="never downloaded"):
        create_model("ndi-wsod", num_classes=3, backbone="vgg16", hidden=32,
                     backbone_weights=str(tmp_path / "absent.pth"))
