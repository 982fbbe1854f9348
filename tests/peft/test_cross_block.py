"""Cross-block orchestration faithful checks (methods.md §3.7): init identity, quaternion structure,
relation-matrix effects (gradient check on a 2-block width-32 ViT), parameter-count formulas, fold-back."""

from __future__ import annotations

import pytest
import torch

from geolesf.errors import ConfigError, ModelError
from geolesf.methods.sam.build import build_sam_model
from geolesf.peft.cross_block import (
    CrossBlockAdapter,
    CrossBlockLoRAQKV,
    QuaternionLinear,
    RelationMatrix,
    apply_cross_block,
    cross_block_overhead,
    fold_lora_state_dict,
    hamilton_weight,
    orchestration_parameter_count,
)


def _tiny_encoder(seed: int = 0):
    torch.manual_seed(seed)
    return build_sam_model("tiny").image_encoder  # 2 blocks, width 32


def _hamilton(q, x):
    """Hamilton product q ⊗ x of quaternions given as (..., 4) tensors (r, i, j, k)."""
    a1, b1, c1, d1 = q.unbind(-1)
    a2, b2, c2, d2 = x.unbind(-1)
    return torch.stack([a1 * a2 - b1 * b2 - c1 * c2 - d1 * d2,
                        a1 * b2 + b1 * a2 + c1 * d2 - d1 * c2,
                        a1 * c2 - b1 * d2 + c1 * a2 + d1 * b2,
                        a1 * d2 + b1 * c2 - c1 * b2 + d1 * a2], -1)


@pytest.mark.parametrize("host,lora_init", [("adapter", "official"), ("lora", "zero_b")])
@pytest.mark.parametrize("relation", [True, False])
def test_wrapped_encoder_equals_frozen_sam_at_init(host, lora_init, relation):
    """Adapter host (``up = 0`` in the official code) and the LoRA host's ``zero_b`` deviation
    (``B = 0``) leave the encoder exactly equal to frozen SAM at init. The official LoRA init does
    not (``test_lora_official_init_is_xavier_normal_on_both_factors``)."""
    enc = _tiny_encoder()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        before = enc(x)
    shared = apply_cross_block(enc, host, relation=relation, lora_init=lora_init)
    enc.eval()
    with torch.no_grad():
        after = enc(x)
    assert torch.equal(before, after)
    if host == "lora":
        for blk in enc.blocks:
            assert blk.attn.qkv.init == "zero_b"
            assert torch.count_nonzero(blk.attn.qkv.b_q.weight) == 0
            assert torch.count_nonzero(blk.attn.qkv.b_v.weight) == 0
            assert torch.count_nonzero(blk.attn.qkv.a_q.weight) == blk.attn.qkv.a_q.weight.numel()
    if relation:
        assert torch.equal(shared.coefficients(), torch.ones_like(shared.coefficients()))


@pytest.mark.parametrize("relation", [True, False])
def test_lora_official_init_is_xavier_normal_on_both_factors(relation):
    """Default ``lora_init="official"`` = SAM-COBOT's ``init_weights`` (remote/model/utils.py), applied to
    A_q, B_q, A_v, B_v at build: ``xavier_normal_`` → N(0, 2/(fan_in+fan_out)) for *both* factors.

    At vit_b width (768, rank 4) each factor has std √(2/772) = 0.05090; the 4 factors of one block
    give 4·3072 = 12288 samples, so the sample std is within ±1.3 % (1σ) of it; tolerance 5 %.
    kaiming-uniform(a=√5) (the LoRA convention for A) has std 1/√(3·768) = 0.02083 and B = 0 has 0:
    both fail. Normal, not uniform: P(|x| < σ) = 0.6827 (uniform: 0.5774), checked to ±0.02.
    """
    torch.manual_seed(3)
    dim, rank = 768, 4
    qkv = torch.nn.Linear(dim, 3 * dim)
    shared = RelationMatrix(rank, 2) if relation else None
    mod = CrossBlockLoRAQKV(qkv, rank, shared, 0)  # default init
    assert mod.init == "official"
    std = (2.0 / (dim + rank)) ** 0.5
    assert abs(std - 0.05090) < 1e-5
    factors = [m.weight.detach() for m in (mod.a_q, mod.b_q, mod.a_v, mod.b_v)]
    for w in factors:
        assert w.abs().min() > 0  # every entry random, none zero
        assert abs(float(w.std()) / std - 1) < 0.10  # each factor alone (3072 samples)
    pooled = torch.cat([w.flatten() for w in factors])
    assert pooled.numel() == 4 * dim * rank == 12288
    assert abs(float(pooled.std()) / std - 1) < 0.05
    assert abs(float(pooled.mean())) < 3 * std / pooled.numel() ** 0.5
    assert abs(float((pooled.abs() < std).float().mean()) - 0.6827) < 0.02
    # init_weights touches the four Linears only: the quaternion projectors and γ keep their own init
    if relation:
        assert torch.equal(mod.gamma, torch.ones(2 * rank))
        for q in mod.quaternion:
            assert torch.equal(q.r_weight, torch.zeros(1, 1))
            assert all(bool((w >= 0).all() and (w < 1).all()) for w in (q.i_weight, q.j_weight, q.k_weight))
    # not the frozen qkv at init: ΔW = B·Q(…)·A ≠ 0 on the q and v thirds, 0 on k
    x = torch.randn(5, dim)
    with torch.no_grad():
        out = mod(x) - qkv(x)
    assert out[:, :dim].abs().max() > 1e-3 and out[:, 2 * dim:].abs().max() > 1e-3
    assert torch.count_nonzero(out[:, dim:2 * dim]) == 0


def test_lora_official_init_equals_seeded_xavier_normal_calls(monkeypatch):
    """Exact equality with ``torch.nn.init.xavier_normal_`` under the same seed: replay the RNG state
    captured just before the init calls, in the code's order (TAM_CP_relation: A_q, A_v, B_q, B_v)."""
    states = []
    real = torch.nn.init.xavier_normal_

    def spy(tensor, *args, **kwargs):
        states.append(torch.get_rng_state())
        return real(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.nn.init, "xavier_normal_", spy)
    torch.manual_seed(11)
    mod = CrossBlockLoRAQKV(torch.nn.Linear(32, 96), 4, RelationMatrix(4, 2), 0)
    monkeypatch.setattr(torch.nn.init, "xavier_normal_", real)
    assert len(states) == 4  # one call per LoRA factor, nothing else
    torch.set_rng_state(states[0])
    expected = []
    for shape in ((4, 32), (4, 32), (32, 4), (32, 4)):
        w = torch.empty(shape)
        real(w)
        expected.append(w)
    for w, e in zip((mod.a_q.weight, mod.a_v.weight, mod.b_q.weight, mod.b_v.weight), expected):
        assert torch.equal(w, e)


def test_lora_init_option_is_validated():
    with pytest.raises(ConfigError, match="lora_init"):
        apply_cross_block(_tiny_encoder(), "lora", lora_init="zeros")


def test_adapter_bottleneck_at_init_is_quaternion_of_twice_d():
    enc = _tiny_encoder()
    apply_cross_block(enc, "adapter")
    ad = enc.blocks[1].mlp
    assert isinstance(ad, CrossBlockAdapter) and ad.slot == 1
    d = torch.randn(7, 16)
    mixed = ad.mix(d, 0, ad.relation.coefficients())
    assert torch.allclose(mixed, ad.quaternion[0](2 * d), atol=1e-6)
    # quaternion init: R = 0, I, J, K in [0, 1)
    q = ad.quaternion[0]
    assert torch.equal(q.r_weight, torch.zeros(4, 4))
    assert all(0 <= w.min() and w.max() < 1 for w in (q.i_weight, q.j_weight, q.k_weight))


def test_quaternion_hamilton_structure():
    torch.manual_seed(0)
    # scalar multiples of the identity → WᵀW = ‖q‖² I
    a, b, c, d = 0.3, -1.2, 0.7, 2.0
    eye = torch.eye(5, dtype=torch.float64)
    w = hamilton_weight(a * eye, b * eye, c * eye, d * eye)
    norm2 = a * a + b * b + c * c + d * d
    assert torch.allclose(w.T @ w, norm2 * torch.eye(20, dtype=torch.float64), atol=1e-12)
    # n = 4: the layer computes the Hamilton product q ⊗ x
    layer = QuaternionLinear(4, 4).double()
    with torch.no_grad():
        for p in (layer.r_weight, layer.i_weight, layer.j_weight, layer.k_weight):
            p.normal_()
    q = torch.stack([layer.r_weight, layer.i_weight, layer.j_weight, layer.k_weight]).flatten()
    x = torch.randn(6, 4, dtype=torch.float64)
    assert torch.allclose(layer(x), _hamilton(q.expand(6, 4), x), atol=1e-12)
    # parameter counts n²/4
    assert sum(p.numel() for p in QuaternionLinear(16, 16).parameters()) == 64
    assert sum(p.numel() for p in QuaternionLinear(4, 4).parameters()) == 4
    with pytest.raises(ModelError):
        QuaternionLinear(6, 6)


@pytest.mark.parametrize("host", ["adapter", "lora"])
def test_relation_matrix_effects_gradient_check(host, monkeypatch):
    """FacT_p[i, j] reaches block j only, through FacT_c's slot i: ∂L/∂FacT_p = FacT_cᵀ ∂L/∂C."""
    enc = _tiny_encoder(seed=1)
    shared = apply_cross_block(enc, host)
    enc.double()
    enc.eval()
    torch.manual_seed(2)
    with torch.no_grad():  # leave the init point so gradients reach the relation tensors
        for name, p in enc.named_parameters():
            if any(k in name for k in (".up.", ".b_q.", ".b_v.", "FacT_c")):
                p.normal_(0, 0.5)
    calls = []
    original = RelationMatrix.coefficients

    def recording(self):
        c = original(self)
        c.retain_grad()
        calls.append(c)
        return c

    monkeypatch.setattr(RelationMatrix, "coefficients", recording)
    block_out = {}
    enc.blocks[0].register_forward_hook(lambda m, i, o: block_out.__setitem__(0, o))
    x = torch.randn(1, 3, 128, 128, dtype=torch.float64)
    enc(x)
    loss = (block_out[0] ** 2).sum()  # depends on block 0 only
    loss.backward()
    g_c = sum(c.grad if c.grad is not None else torch.zeros_like(c) for c in calls)[0]  # (r, T)
    expected = shared.FacT_c[0].T @ g_c
    assert torch.allclose(shared.FacT_p.grad, expected, atol=1e-8)
    per_block = 1 if host == "adapter" else 2
    # columns of block 1's slots get no gradient from a loss on block 0; block 0's do
    assert torch.count_nonzero(shared.FacT_p.grad[:, per_block:]) == 0
    assert shared.FacT_p.grad[:, :per_block].abs().sum() > 0
    # perturbing FacT_p[i, j] of a block-1 slot j leaves block 0 unchanged and changes block 1
    monkeypatch.setattr(RelationMatrix, "coefficients", original)
    outs = {}
    for b in (0, 1):
        enc.blocks[b].register_forward_hook(lambda m, i, o, b=b: outs.setdefault(b, []).append(o.detach()))
    with torch.no_grad():
        enc(x)
        shared.FacT_p[0, per_block] += 0.5
        enc(x)
    assert torch.equal(outs[0][0], outs[0][1])
    assert not torch.allclose(outs[1][0], outs[1][1])


def test_parameter_count_formulas():
    assert cross_block_overhead("adapter", 12) == {"relation": 336, "per_block": 80, "blocks": 960, "total": 1296}
    assert cross_block_overhead("lora", 12)["total"] == 4 * 24 + 24 * 24 + 12 * (8 + 2 * 4)
    for host in ("adapter", "lora"):
        enc = _tiny_encoder()
        apply_cross_block(enc, host)
        assert orchestration_parameter_count(enc) == cross_block_overhead(host, 2)["total"]
    # vit_b shapes, built without weights on the meta device
    with torch.device("meta"):
        enc = build_sam_model("vit_b").image_encoder
        assert len(enc.blocks) == 12 and enc.blocks[0].norm2.normalized_shape[0] == 768
        apply_cross_block(enc, "adapter")
    assert orchestration_parameter_count(enc) == 1296
    # the relation tensors are shared: stored once in the state dict
    keys = [k for k in enc.state_dict() if "FacT_" in k]
    assert keys == ["cobo_relation.FacT_c", "cobo_relation.FacT_p"]


def test_plain_baselines_have_no_orchestration_parts():
    enc = _tiny_encoder()
    apply_cross_block(enc, "lora", relation=False)
    assert orchestration_parameter_count(enc) == 0
    assert isinstance(enc.blocks[0].attn.qkv, CrossBlockLoRAQKV) and enc.blocks[0].attn.qkv.relation is None
    with pytest.raises(ConfigError):
        apply_cross_block(_tiny_encoder(), "prefix")
    with pytest.raises(ConfigError):
        apply_cross_block(_tiny_encoder(), "adapter", rank=6)


@pytest.mark.parametrize("relation", [True, False])
def test_lora_fold_back_loads_into_unmodified_sam(relation):
    torch.manual_seed(5)
    sam = build_sam_model("tiny")
    apply_cross_block(sam.image_encoder, "lora", relation=relation)
    sam.double()
    with torch.no_grad():
        for name, p in sam.named_parameters():
            if any(k in name for k in ("b_q", "b_v", "a_q", "FacT", "gamma", "quaternion")):
                p.add_(torch.randn_like(p) * 0.3)
    x = torch.randn(1, 3, 128, 128, dtype=torch.float64)
    with torch.no_grad():
        wrapped = sam.image_encoder(x)
    plain = build_sam_model("tiny").double()
    plain.load_state_dict(fold_lora_state_dict(sam), strict=True)
    with torch.no_grad():
        assert torch.allclose(plain.image_encoder(x), wrapped, atol=1e-9)
