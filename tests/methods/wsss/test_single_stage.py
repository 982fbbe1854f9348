"""Single-stage WSSS: the joint loss and its pseudo labels on tiny models."""

from __future__ import annotations

import pytest
import torch

from geolesf.methods.wsss.single_stage import (
    SingleStageOptions,
    SingleStageWSSS,
    pseudo_labels,
    refined_scores,
    segment,
    single_stage_loss,
)
from geolesf.registry import create_model


@pytest.mark.parametrize("backbone,kw", [("simple", {"width": 8, "depth": 2}),
                                         ("vit", {"embed_dim": 16, "depth": 2, "num_heads": 2, "patch_size": 8,
                                                  "img_size": 32})])
def test_joint_loss_parts_and_backward(backbone, kw):
    torch.manual_seed(0)
    net = create_model("cam", num_classes=3, backbone=backbone, **kw)
    model = SingleStageWSSS(net, 4, embed_dim=8, hidden=16)
    x = torch.randn(2, 3, 32, 32)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    opts = SingleStageOptions(bg_threshold=0.3, margin=0.05, lambda_aa=0.5, lambda_lr=2.0)
    parts = single_stage_loss(model, x, labels, opts)
    total = parts["cls"] + parts["seg"] + 0.5 * parts["aa"] + 2.0 * parts["lr"]
    assert parts["loss"].item() == pytest.approx(total.item(), rel=1e-6)
    parts["loss"].backward()
    assert model.seg_head[-1].weight.grad.abs().sum() > 0
    assert model.embed_head.weight.grad.abs().sum() > 0
    assert segment(model.eval(), x).shape == (2, 4, 32, 32)


def test_warmup_trains_the_classifier_only():
    net = create_model("cam", num_classes=2, backbone="simple", width=4, depth=2)
    model = SingleStageWSSS(net, 3, embed_dim=4, hidden=8)
    parts = single_stage_loss(model, torch.randn(1, 3, 16, 16), torch.tensor([[1.0, 0.0]]),
                              SingleStageOptions(warmup_steps=5), step=2)
    assert parts["loss"].item() == parts["cls"].item() and parts["seg"].item() == 0.0


def test_pseudo_labels_only_use_tagged_classes_and_have_an_ignore_band():
    torch.manual_seed(1)
    net = create_model("cam", num_classes=3, backbone="simple", width=4, depth=2)
    model = SingleStageWSSS(net, 4, embed_dim=4, hidden=8).eval()
    x = torch.randn(1, 3, 32, 32)
    labels = torch.tensor([[0.0, 1.0, 0.0]])
    out = model.forward_all(x)
    for refine in ("none", "embedding"):
        opts = SingleStageOptions(bg_threshold=0.3, margin=0.2, refine=refine)
        pl, conf = pseudo_labels(out, labels, opts, is_transformer=False)
        assert set(pl.unique().tolist()) <= {0, 2, 255}
        assert torch.equal(pl == 255, conf < 0.2)
    plain = refined_scores(out["maps"], labels, SingleStageOptions(refine="none"))
    walked = refined_scores(out["maps"], labels, SingleStageOptions(refine="embedding"), emb=out["emb"])
    assert torch.allclose(walked[:, 0], plain[:, 0])  # the constant background score is preserved
    assert not torch.allclose(walked, plain)
