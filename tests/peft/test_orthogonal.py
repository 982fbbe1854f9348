"""methods.md §1.5 checks of H-CLIP's block-diagonal orthogonal reparameterisation (tiny open_clip CLIP)."""

from __future__ import annotations

import pytest
import torch

from geolesf.errors import ModelError
from geolesf.methods.hclip.backbone import build_clip
from geolesf.peft.orthogonal import (
    DualCrossRelation,
    apply_orthogonal_peft,
    cayley,
    frozen_in_proj,
    hyperspherical_energy,
    parameter_report,
    rotate_qkv,
    skew_from_upper,
)


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    clip, _ = build_clip(tiny=True)
    return clip


def _fresh(tiny_clip, **kw):
    import copy

    clip = copy.deepcopy(tiny_clip)
    return clip, apply_orthogonal_peft(clip, 16, **kw)


def _randomise(relation, scale=0.3):
    with torch.no_grad():
        for p in relation.parameters():
            p.add_(scale * torch.randn_like(p))


def test_cayley_is_orthogonal_and_identity_at_zero():
    s = skew_from_upper(torch.randn(5, 16 * 15 // 2), 16)
    assert torch.equal(s, -s.transpose(-1, -2))
    r = cayley(s.double())
    eye = torch.eye(16, dtype=torch.float64)
    assert (r.transpose(-1, -2) @ r - eye).abs().max() < 1e-10
    assert torch.equal(cayley(torch.zeros(3, 16, 16)), torch.eye(16).expand(3, 16, 16))


def test_identity_at_init_exact_weights_and_outputs(tiny_clip):
    import open_clip

    clip, relation = _fresh(tiny_clip)
    for m, blocks in (("image", clip.visual.transformer.resblocks), ("text", clip.transformer.resblocks)):
        for blk in blocks:
            assert torch.equal(blk.attn.in_proj_weight, blk.attn.parametrizations.in_proj_weight.original)
    # same outputs as the untouched CLIP: bit-identical image features in eval mode; the text tower (and
    # train mode) take PyTorch's non-fused attention path for the parametrised weight → rounding only
    x = torch.randn(2, 3, 64, 64)
    tok = open_clip.get_tokenizer("ViT-B-16")(["a photo of a road", "water"])
    with torch.no_grad():
        assert torch.equal(clip.encode_image(x), tiny_clip.encode_image(x))
        assert torch.allclose(clip.encode_text(tok), tiny_clip.encode_text(tok), atol=1e-5)
        tiny_clip.train()
        clip.train()
        assert torch.allclose(clip.encode_image(x), tiny_clip.encode_image(x), atol=1e-5)
    tiny_clip.eval()


def test_only_peft_parameters_train(tiny_clip):
    clip, relation = _fresh(tiny_clip)
    trainable = {n for n, p in clip.named_parameters() if p.requires_grad}
    assert trainable == {"positional_embedding", "visual.positional_embedding"}
    assert all(p.requires_grad for p in relation.params.values())


def test_orthogonality_and_energy_after_optimizer_updates(tiny_clip):
    import open_clip

    clip, relation = _fresh(tiny_clip)
    opt = torch.optim.AdamW(relation.parameters(), lr=0.05)
    tok = open_clip.get_tokenizer("ViT-B-16")(["a photo of a road", "a tree"])
    x = torch.randn(2, 3, 64, 64)
    for _ in range(3):
        loss = clip.encode_image(x).pow(2).mean() + clip.encode_text(tok).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert relation.params["text"].abs().max() > 0 and relation.params["image"].abs().max() > 0
    assert not torch.allclose(relation.phi, torch.eye(2))  # DCRC relations were trained too
    for m in ("image", "text"):
        for layer in range(relation.depths[m]):
            r = relation.rotations(m, layer).detach()
            eye = torch.eye(r.shape[-1])
            assert (r.transpose(-1, -2) @ r - eye).abs().max() < 1e-5
    # hyperspherical energy of the text q/k/v weights is preserved (relative 1e-4)
    for blk, w0 in zip(clip.transformer.resblocks, frozen_in_proj(clip, "text")):
        w1 = blk.attn.in_proj_weight.detach()
        assert not torch.allclose(w1, w0)
        for a, b in zip(w0.chunk(3), w1.chunk(3)):
            he0, he1 = hyperspherical_energy(a), hyperspherical_energy(b)
            assert abs(float(he1 - he0)) / float(he0) < 1e-4
    with torch.no_grad():
        assert float(relation.text_energy_penalty(list(frozen_in_proj(clip, "text")))) < 1e-4


def test_free_transform_changes_energy_and_penalty_sees_it(tiny_clip):
    clip, relation = _fresh(tiny_clip, text_transform="free")
    _randomise(relation, 0.05)
    with torch.no_grad():
            assert float(relation.text_energy_penalty(list(frozen_in_proj(clip, "text")))) > 1e-4


def test_rotate_qkv_matches_explicit_block_diagonal():
    d, b = 32, 8
    w = torch.randn(3 * d, d, dtype=torch.float64)
    rot = cayley(skew_from_upper(torch.randn(3, d // b, b * (b - 1) // 2, dtype=torch.float64), b))
    expected = torch.cat([w[k * d:(k + 1) * d] @ torch.block_diag(*rot[k]).T for k in range(3)])
    assert torch.allclose(rotate_qkv(w, rot), expected)
    # Gram matrix of neurons unchanged
    for a, c in zip(w.chunk(3), rotate_qkv(w, rot).chunk(3)):
        assert torch.allclose(a @ a.T, c @ c.T)


def test_dcrc_mixes_layers_and_modalities():
    rel = DualCrossRelation({"image": 64, "text": 32}, {"image": 4, "text": 2}, 16)
    with torch.no_grad():
        rel.params["text"][0].normal_()
    # text-only change reaches image layers only through Φ[image, text]
    assert torch.equal(rel.generator("image", 0), torch.zeros(3, 4, 16, 16))
    with torch.no_grad():
        rel.phi[0, 1] = 1.0
        rel.psi["image"][1, 0] = 0.5
    g = rel.generator("image", 0)
    assert g[:, :2].abs().sum() > 0 and g[:, 2:].abs().sum() == 0   # common blocks = min(4, 2)
    r = rel.rotations("image", 0)
    assert (r.transpose(-1, -2) @ r - torch.eye(16)).abs().max() < 1e-5


def test_parameter_count_formula_tiny_and_vitb16(tiny_clip):
    clip, relation = _fresh(tiny_clip)
    b = 16
    # 2 blocks per tower, q/k/v, width 64 → r = 4 Cayley blocks of b(b−1)/2
    assert sum(p.numel() for p in relation.params.values()) == 2 * (2 * 3 * (64 // b) * b * (b - 1) // 2)
    rep = parameter_report(clip, relation)
    assert rep["positional"] == clip.positional_embedding.numel() + clip.visual.positional_embedding.numel()
    # ViT-B/16 shapes (no weights): q/k/v of 24 blocks, b = 32, Cayley; plus positional embeddings
    rel = DualCrossRelation({"image": 768, "text": 512}, {"image": 12, "text": 12}, 32)
    rot = sum(p.numel() for p in rel.params.values())
    assert rot == 12 * 3 * (768 // 32) * 496 + 12 * 3 * (512 // 32) * 496
    from open_clip.factory import get_model_config
    from open_clip.model import CLIP

    with torch.device("meta"):  # shapes only, no weights
        vitb = CLIP(**get_model_config("ViT-B-16"), quick_gelu=True)
    total = sum(p.numel() for p in vitb.parameters())
    assert 149e6 < total < 151e6
    ratio = (rot + 197 * 768 + 77 * 512) / total
    assert 0.004 < ratio < 0.04  # of the order of the paper's ≈4 % (documented in docs/hclip.md)


def test_bad_block_size_is_a_model_error(tiny_clip):
    import copy

    with pytest.raises(ModelError, match="block_size 24 must divide"):
        apply_orthogonal_peft(copy.deepcopy(tiny_clip), 24)
