"""CAM models: shapes, normalisation, multi-scale + flip inference, seeds, weight loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from geolesf.errors import ModelError
from geolesf.methods.wsss.cam import (
    cams_to_seeds,
    multiscale_cams,
    normalise_cams,
    scores_to_seeds,
)
from geolesf.registry import create_model

TINY = {
    "simple": {"width": 8, "depth": 3},
    "vit": {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8, "img_size": 32},
    "resnet18": {},
}


@pytest.mark.parametrize("backbone", list(TINY))
def test_cam_shapes(backbone):
    torch.manual_seed(0)
    m = create_model("cam", num_classes=5, backbone=backbone, **TINY[backbone]).eval()
    x = torch.randn(2, 3, 64, 48)
    stride = m.stride
    assert m(x).shape == (2, 5)
    assert m.cam_logits(x).shape == (2, 5, -(-64 // stride), -(-48 // stride))
    cams = multiscale_cams(m, x, scales=(1.0, 0.5), flip=True)
    assert cams.shape == (2, 5, 64, 48)
    assert cams.min() >= 0 and cams.amax((-2, -1)).max() < 1.0
    raw = multiscale_cams(m, x, scales=(1.0, 0.5), flip=True, normalise=False)
    assert raw.min() >= 0
    assert torch.allclose(cams, raw / (raw.amax((-2, -1), keepdim=True) + 1e-5))


def test_vit_returns_one_attention_map_per_block():
    m = create_model("cam", num_classes=3, backbone="vit", **TINY["vit"]).eval()
    feats, attn = m.features(torch.randn(1, 3, 40, 24))
    assert feats.shape == (1, 32, 5, 3)
    assert len(attn) == 2 and attn[0].shape == (1, 2, 16, 16)
    assert torch.allclose(attn[0].sum(-1), torch.ones(1, 2, 16))
    with pytest.raises(ModelError, match="divisible"):
        m.features(torch.randn(1, 3, 33, 32))


def test_normalise_cams_hand_case():
    raw = torch.tensor([[[[-1.0, 2.0], [4.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]])
    out = normalise_cams(raw, eps=0.0 + 1e-5)
    expect = torch.tensor([[0.0, 2.0], [4.0, 0.0]]) / (4.0 + 1e-5)
    assert torch.allclose(out[0, 0], expect)
    assert torch.equal(out[0, 1], torch.zeros(2, 2))


def test_multiscale_single_scale_matches_direct_cam():
    torch.manual_seed(1)
    m = create_model("cam", num_classes=2, backbone="simple", width=4, depth=2).eval()
    x = torch.randn(1, 3, 32, 32)
    direct = F.interpolate(F.relu(m.cam_logits(x)), size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.allclose(multiscale_cams(m, x, scales=(1.0,), flip=False), normalise_cams(direct), atol=1e-6)


def test_flip_inference_is_flip_equivariant():
    torch.manual_seed(2)
    m = create_model("cam", num_classes=3, backbone="simple", width=4, depth=2).eval()
    x = torch.randn(1, 3, 32, 40)
    a = multiscale_cams(m, x.flip(-1), scales=(1.0, 0.5), flip=True)
    b = multiscale_cams(m, x, scales=(1.0, 0.5), flip=True).flip(-1)
    assert torch.allclose(a, b, atol=1e-5)


def test_seeds_with_background_threshold_and_margin():
    cams = torch.tensor([[[[0.9, 0.1], [0.2, 0.5]], [[0.1, 0.05], [0.7, 0.45]], [[1.0, 1.0], [1.0, 1.0]]]])
    labels = torch.tensor([[1.0, 1.0, 0.0]])  # class 2 absent: its (high) map must be ignored
    seeds, conf = cams_to_seeds(cams, labels, bg_threshold=0.15)
    assert seeds.tolist() == [[[1, 0], [2, 1]]]
    assert torch.allclose(conf, torch.tensor([[[0.75, 0.05], [0.5, 0.05]]]), atol=1e-6)
    seeds, _ = cams_to_seeds(cams, labels, bg_threshold=0.15, margin=0.1)
    assert seeds.tolist() == [[[1, 255], [2, 255]]]


def test_seeds_without_background_and_single_class_confidence():
    cams = torch.tensor([[[[0.2, 0.9]], [[0.6, 0.1]]]])
    seeds, conf = cams_to_seeds(cams, torch.tensor([[1.0, 1.0]]), bg_threshold=None)
    assert seeds.tolist() == [[[1, 0]]] and torch.allclose(conf, torch.tensor([[[0.4, 0.8]]]))
    seeds, conf = cams_to_seeds(cams, torch.tensor([[0.0, 1.0]]), bg_threshold=None, margin=0.5)
    assert seeds.tolist() == [[[1, 1]]] and torch.equal(conf, torch.ones(1, 1, 2))
    scores = torch.tensor([[[[0.3]], [[0.3]]]])
    assert scores_to_seeds(scores, margin=0.01)[0].item() == 255


def test_resnet_weights_load_from_a_local_file(tmp_path):
    import torchvision

    torch.manual_seed(3)
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    m = create_model("cam", num_classes=2, backbone="resnet18", weights=str(path))
    assert torch.equal(m.backbone.stem[0].weight, ref.conv1.weight)
    assert torch.equal(m.backbone.layers[3][1].conv2.weight, ref.layer4[1].conv2.weight)
    with pytest.raises(ModelError, match="not found"):
        create_model("cam", num_classes=2, backbone="resnet18", weights=str(tmp_path / "missing.pth"))


def test_vit_matches_timm_with_the_same_weights(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(4)
    ref = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0).eval()
    path = tmp_path / "vit.pth"
    torch.save(ref.state_dict(), path)
    m = create_model("cam", num_classes=2, backbone="vit", weights=str(path), **TINY["vit"]).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        tokens = ref.forward_features(x)[:, 1:]
        ours = m.features(x)[0].flatten(2).transpose(1, 2)
    assert np.allclose(tokens.numpy(), ours.numpy(), atol=1e-5)


def test_no_tagged_class_means_no_confidence():
    cams = torch.rand(1, 2, 2, 2)
    seeds, conf = cams_to_seeds(cams, torch.zeros(1, 2), bg_threshold=None, margin=0.1)
    assert (conf == 0).all() and (seeds == 255).all()
