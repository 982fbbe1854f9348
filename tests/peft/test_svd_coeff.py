"""SAM-PARSER faithful checks (methods.md §4.5): exact reconstruction, fold-back, gradient identity, counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from geolesf.errors import ConfigError, ModelError
from geolesf.methods.sam.build import build_sam_model
from geolesf.peft.svd_coeff import (
    SVDConv2d,
    SVDLinear,
    parser_rank,
    parser_to_dense,
    parser_trainable_count,
    svd_reparameterise,
    train_singular_values_only,
)

LAYERS = {
    "linear": (lambda: nn.Linear(24, 40), (5, 24)),
    "conv3x3_stride_pad": (lambda: nn.Conv2d(8, 12, 3, stride=2, padding=1), (2, 8, 11, 9)),
    "patch16": (lambda: nn.Conv2d(3, 32, 16, stride=16), (2, 3, 48, 32)),
    "conv1x1_nobias": (lambda: nn.Conv2d(20, 16, 1, bias=False), (2, 20, 5, 5)),
    "conv3x3_dilated": (lambda: nn.Conv2d(4, 8, 3, padding=2, dilation=2), (1, 4, 10, 10)),
}


def _decompose(layer: nn.Module, **kw) -> nn.Module:
    return SVDLinear.from_linear(layer, **kw) if isinstance(layer, nn.Linear) else SVDConv2d.from_conv(layer, **kw)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_exact_reconstruction_at_init(name):
    torch.manual_seed(0)
    make, shape = LAYERS[name]
    layer = make().double()
    svd = _decompose(layer)
    x = torch.randn(*shape, dtype=torch.float64)
    assert torch.allclose(svd(x), layer(x), atol=1e-10, rtol=0)
    assert (svd(x) - layer(x)).abs().max() < 1e-5  # the methods.md tolerance, with margin
    # float32 layers stay float32 and close
    layer32 = make()
    assert torch.allclose(_decompose(layer32)(x.float()), layer32(x.float()), atol=1e-4)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_fold_back_gives_original_weight(name):
    torch.manual_seed(1)
    layer = LAYERS[name][0]().double()
    svd = _decompose(layer)
    assert torch.allclose(svd.dense_weight(), layer.weight, atol=1e-12)
    dense = svd.to_dense()
    assert type(dense) is type(layer)
    assert torch.allclose(dense.weight, layer.weight, atol=1e-12)
    # state-dict fold-back: keys return to the original names and values
    folded = parser_to_dense({f"m.{k}": v for k, v in svd.state_dict().items()})
    assert set(folded) == {f"m.{k}" for k in layer.state_dict()}
    for k, v in layer.state_dict().items():
        assert torch.allclose(folded[f"m.{k}"], v, atol=1e-12)


@pytest.mark.parametrize("name", ["linear", "conv3x3_stride_pad", "patch16"])
def test_gradient_identity_on_singular_values(name):
    """∂L/∂s_k = u_kᵀ (∂L/∂W) v_k, with ∂L/∂W from autograd on the dense layer."""
    torch.manual_seed(2)
    make, shape = LAYERS[name]
    layer = make().double()
    svd = _decompose(layer)
    svd.vector_S.data.mul_(torch.linspace(0.5, 1.5, svd.rank, dtype=torch.float64).reshape(svd.vector_S.shape))
    train_singular_values_only(svd)
    assert [n for n, p in svd.named_parameters() if p.requires_grad] == ["vector_S"]
    x = torch.randn(*shape, dtype=torch.float64)
    weights = torch.randn_like(svd(x))
    (svd(x) * weights).sum().backward()
    # the same function through a dense weight W = U diag(s) Vᵀ
    w = svd.dense_weight().detach().requires_grad_(True)
    if isinstance(layer, nn.Linear):
        y = nn.functional.linear(x, w, svd.fc_U.bias)
        u, v = svd.fc_U.weight, svd.fc_V.weight
    else:
        y = nn.functional.conv2d(x, w, svd.conv_U.bias, layer.stride, layer.padding, layer.dilation)
        u, v = svd.conv_U.weight.reshape(w.shape[0], -1), svd.conv_V.weight.reshape(svd.rank, -1)
    (y * weights).sum().backward()
    g_w = w.grad.reshape(w.shape[0], -1)
    expected = torch.einsum("ok,oi,ki->k", u, g_w, v)
    assert torch.allclose(svd.vector_S.grad.flatten(), expected, atol=1e-9)


def test_rank_rule():
    assert parser_rank(768) == 768 and parser_rank(256) == 256
    assert parser_rank(30) == 28 and parser_rank(3) == 1 and parser_rank(30, multiple=1) == 30
    assert parser_rank(100, ratio=0.5) == 48
    with pytest.raises(ConfigError):
        parser_rank(10, ratio=0)


def test_rank_multiple_one_keeps_odd_shapes_exact():
    torch.manual_seed(3)
    layer = nn.Linear(30, 50).double()
    truncated = SVDLinear.from_linear(layer)  # official rule: rank 28 < 30
    exact = SVDLinear.from_linear(layer, rank_multiple=1)
    x = torch.randn(4, 30, dtype=torch.float64)
    assert truncated.rank == 28 and exact.rank == 30
    assert torch.allclose(exact(x), layer(x), atol=1e-10)
    assert not torch.allclose(truncated(x), layer(x), atol=1e-6)


@pytest.mark.parametrize("scope", ["neck", "all_conv", "all_linear_and_conv"])
def test_tiny_sam_scopes_count_equals_sum_of_ranks_and_fold_back_loads(scope):
    torch.manual_seed(4)
    sam = build_sam_model("tiny").double()
    reference = {k: v.clone() for k, v in sam.state_dict().items()}
    x = torch.randn(1, 3, 128, 128, dtype=torch.float64)
    with torch.no_grad():
        before = sam.image_encoder(x)
    predicted = parser_trainable_count(sam.image_encoder, scope)
    ranks = svd_reparameterise(sam.image_encoder, scope)
    trainable = train_singular_values_only(sam.image_encoder)
    assert trainable == sum(ranks.values()) == predicted
    if scope == "neck":
        assert set(ranks) == {"neck.0", "neck.2"} and trainable == 2 * 32
    if scope == "all_conv":
        assert set(ranks) == {"patch_embed.proj", "neck.0", "neck.2"}
    assert all(p.requires_grad == n.endswith("vector_S") for n, p in sam.image_encoder.named_parameters())
    with torch.no_grad():
        assert torch.allclose(sam.image_encoder(x), before, atol=1e-9)
    sd = sam.state_dict()
    if scope != "all_linear_and_conv":
        assert "image_encoder.neck.0.conv_V.weight" in sd and "image_encoder.neck.0.vector_S" in sd
    dense = parser_to_dense(sd)
    plain = build_sam_model("tiny").double()
    plain.load_state_dict(dense, strict=True)  # unmodified segment_anything architecture
    for k, v in reference.items():
        assert torch.allclose(dense[k], v, atol=1e-9), k


def test_bad_scope_and_missing_factor():
    with pytest.raises(ConfigError):
        svd_reparameterise(nn.Sequential(nn.Linear(4, 4)), "everything")
    with pytest.raises(ModelError):
        svd_reparameterise(nn.Sequential(nn.Linear(4, 4)), "neck")
    with pytest.raises(ModelError):
        parser_to_dense({"a.vector_S": torch.ones(1, 2), "a.fc_V.weight": torch.ones(2, 2)})
