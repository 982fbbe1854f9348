"""hclip model: tiny random-init open_clip CLIP, real-image forward/backward on the ADE20K and VOC samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geolesf.data.benchmarks.ade20k import ADE20KFull
from geolesf.data.benchmarks.voc import VOCSegmentation
from geolesf.errors import ChecksumError, ConfigError, ModelError
from geolesf.methods.hclip.backbone import build_clip, load_clip_state_dict
from geolesf.methods.hclip.data import _resize_short
from geolesf.methods.hclip.prompts import build_prompts, get_templates
from geolesf.methods.hclip.train import segmentation_loss
from geolesf.registry import create_model, list_models

TINY = dict(tiny=True, block_size=16, hidden=32, guidance_dim=16, text_guidance_dim=16,
            decoder_dims=(16, 8), decoder_guidance_dims=(16, 8))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("hclip", **TINY)


def _batch(samples, size=64):
    imgs, masks = [], []
    for s in samples:
        img, m = _resize_short(s["image"], s["mask"], size)
        imgs.append(torch.from_numpy(np.ascontiguousarray(img[:size, :size].transpose(2, 0, 1))))
        masks.append(torch.from_numpy(m[:size, :size]))
    return torch.stack(imgs), torch.stack(masks)


@pytest.mark.shared_data("ade20k_samples", "voc_samples")
@pytest.mark.parametrize("which", ["ade20k", "voc"])
def test_real_image_forward_backward(model, shared_data, which):
    if which == "ade20k":
        ds = ADE20KFull(shared_data / "ade20k_samples")
        names = ["road", "building", "tree", "sky", "car", "person"]
        lut = np.full(256, 255)
        for k, n in enumerate(names):
            lut[ds.class_names.index(n)] = k
        samples = [dict(s, mask=lut[s["mask"]]) for s in (ds[0], ds[1])]
    else:
        ds = VOCSegmentation(shared_data / "voc_samples" / "deeplabv3plus_val")
        names = list(ds.prompt_names)
        samples = [ds[0], ds[1]]
    images, masks = _batch(samples)
    model.train()
    model.zero_grad()
    logits = model(model.normalise_uint8(images), names)
    assert logits.shape == (2, len(names), 64, 64) and torch.isfinite(logits).all()
    loss = segmentation_loss(logits, masks, 255, "bce") + segmentation_loss(logits, masks, 255, "ce")
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads["relation.params.image"].abs().sum() > 0
    assert grads["relation.params.text"].abs().sum() > 0
    assert grads["clip.visual.positional_embedding"].abs().sum() > 0
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)


def test_open_vocabulary_any_class_list_and_arbitrary_sizes(model):
    model.eval()
    x = torch.randn(1, 3, 48, 80)
    with torch.no_grad():
        a = model(x, ["water", "road", "tree"])
        b = model(x, ["tree", "water", "road"])
    assert a.shape == (1, 3, 48, 80)
    assert torch.allclose(a[:, [2, 0, 1]], b, atol=1e-4)  # class order only permutes the logits
    with pytest.raises(ModelError, match="multiple of the patch size"):
        model(torch.randn(1, 3, 50, 64), ["a"])


def test_registry_and_parameter_report(model):
    """Exact PEFT-only share of the tiny test model (b = 16), from its shapes.

    Tiny CLIP: width 64 in both towers, 2 + 2 blocks, 64 px input / patch 16 → 1 + 4² = 17 image tokens,
    77 text tokens, embed 32, vocabulary 49,408.
    * rotation: 2 towers × 2 blocks × 3 (q, k, v) × 64/16 = 4 Cayley blocks × 16·15/2 = 120 → 5,760;
    * DCRC: Φ 2·2 = 4, Ψ_image 2·2 = 4, Ψ_text 2·2 = 4 → 12;
    * positional embeddings: 17·64 + 77·64 = 1,088 + 4,928 = 6,016;
    → PEFT-only 11,788.
    CLIP: one block of width 64 has ln 2·(2·64) = 256, in_proj 3·64² + 3·64 = 12,480, out_proj
    64² + 64 = 4,160, MLP (4·64² + 256) + (4·64² + 64) = 33,088 → 49,984. Image tower
    64·3·16·16 + 64 + 17·64 + 2·64 + 2·49,984 + 2·64 + 64·32 = 152,576; text tower
    49,408·64 + 77·64 + 2·49,984 + 2·64 + 64·32 + 1 = 3,269,185; total 3,421,761.
    Share 11,788 / 3,421,761 = 0.3445 % (ViT-B/16 default: 0.6050 %, vs the paper's ≈4 %, see
    tests/peft/test_orthogonal.py::test_parameter_share_vitb16_exact).
    """
    assert "hclip" in list_models()
    rep = model.parameter_report()
    block = 2 * (2 * 64) + (3 * 64 * 64 + 3 * 64) + (64 * 64 + 64) + (4 * 64 * 64 + 4 * 64) + (4 * 64 * 64 + 64)
    assert block == 49_984
    image = 64 * 3 * 16 * 16 + 64 + 17 * 64 + 2 * 64 + 2 * block + 2 * 64 + 64 * 32
    text = 49408 * 64 + 77 * 64 + 2 * block + 2 * 64 + 64 * 32 + 1
    assert (image, text) == (152_576, 3_269_185)
    rotation = 2 * 2 * 3 * (64 // 16) * (16 * 15 // 2)
    relation = 2 * 2 + 2 * 2 + 2 * 2
    positional = 17 * 64 + 77 * 64
    assert (rotation, relation, positional) == (5_760, 12, 6_016)
    peft = rotation + relation + positional
    assert {k: rep[k] for k in ("clip_parameters", "rotation", "relation", "positional", "peft_trainable")} == {
        "clip_parameters": image + text, "rotation": rotation, "relation": relation, "positional": positional,
        "peft_trainable": 11_788}
    assert rep["peft_ratio"] == peft / (image + text) and round(100 * rep["peft_ratio"], 4) == 0.3445
    # the head is reported apart; every trainable tensor is counted exactly once
    assert rep["head"] == sum(p.numel() for p in model.head.parameters()) > 0
    assert rep["total_trainable"] == peft + rep["head"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert rep["total_ratio"] == (peft + rep["head"]) / (image + text)


def test_prompts():
    assert build_prompts(["wall-other-merged", "tv"], get_templates("single")) == [
        "A photo of a wall other merged in the scene.", "A photo of a tv in the scene."]
    assert len(get_templates("vild")) == 14
    with pytest.raises(ConfigError):
        get_templates(["no placeholder"])


def test_local_weights_sha256_and_load(tmp_path):
    clip, _ = build_clip(tiny=True)
    path = tmp_path / "tiny_clip.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in clip.state_dict().items()}}, path)
    state, digest = load_clip_state_dict(path)
    assert len(digest) == 64 and "visual.conv1.weight" in state
    with pytest.raises(ChecksumError):
        load_clip_state_dict(path, sha256="0" * 64)
    with pytest.raises(ModelError, match="not found"):
        load_clip_state_dict(tmp_path / "missing.pt")


def test_hclip_reads_local_clip_checkpoint(tmp_path):
    clip, _ = build_clip(tiny=True)
    with torch.no_grad():
        clip.visual.proj.mul_(2.0)  # distinguishable from a fresh random init
    path = tmp_path / "clip.pt"
    torch.save(clip.state_dict(), path)
    _, digest = load_clip_state_dict(path)
    m = create_model("hclip", clip_checkpoint=str(path), clip_sha256=digest, **TINY)
    assert m.clip_info["sha256"] == digest
    assert torch.equal(m.clip.visual.proj, clip.visual.proj)
    with pytest.raises(ChecksumError):
        create_model("hclip", clip_checkpoint=str(path), clip_sha256="f" * 64, **TINY)


def test_torchscript_archive_like_openai_release(tmp_path):
    """OpenAI's ViT-B-16.pt is a TorchScript archive; its state dict is read with the same keys."""
    import warnings

    clip, _ = build_clip(tiny=True)
    path = tmp_path / "tiny_jit.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(clip), str(path))
        state, _ = load_clip_state_dict(path)
    ref = clip.state_dict()
    assert set(ref) <= set(state) and all(torch.equal(state[k], v) for k, v in ref.items())
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not a CLIP state dict"):
        load_clip_state_dict(tmp_path / "junk.pt")


def test_guided_conv_equals_concatenation():
    from torch.nn import functional as F

    from geolesf.methods.hclip.cost_aggregation import GuidedConv

    torch.manual_seed(0)
    conv = GuidedConv(6, 4, 5)
    x, g = torch.randn(2 * 3, 6, 7, 9), torch.randn(2, 4, 7, 9)
    weight = torch.cat([conv.conv_x.weight, conv.conv_g.weight], 1)
    cat = torch.cat([x, g.repeat_interleave(3, 0)], 1)
    assert torch.allclose(conv(x, g), F.conv2d(cat, weight, conv.conv_x.bias, padding=1), atol=1e-5)


@pytest.mark.shared_data("voc_samples")
def test_learns_a_real_voc_image(shared_data):
    """40 AdamW steps on the trainable (PEFT + head) parameters fit one real VOC image: loss falls, IoU rises."""
    from geolesf.metrics.segmentation import SegmentationConfusion

    torch.manual_seed(0)
    m = create_model("hclip", **TINY)
    s = VOCSegmentation(shared_data / "voc_samples" / "deeplabv3plus_val")[1]
    assert s["name"] == "1"  # aeroplane
    img, mask = _resize_short(s["image"], s["mask"], 64)
    names = ["background", "aeroplane", "sheep", "bird"]
    lut = np.full(256, 255)
    lut[[0, 1, 17, 3]] = [0, 1, 2, 3]
    x = m.normalise_uint8(torch.from_numpy(img.transpose(2, 0, 1).copy())[None])
    y = torch.from_numpy(lut[mask])[None]
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=3e-3)
    m.train()
    losses = []
    for _ in range(40):
        loss = segmentation_loss(m(x, names), y, 255, "ce")
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]
    m.eval()
    cm = SegmentationConfusion(4)
    with torch.no_grad():
        cm.update(y, m(x, names).argmax(1))
    assert cm.compute(names)["per_class_IoU"]["aeroplane"] > 0.2
