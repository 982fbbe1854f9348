"""SAM from segment_anything: official builders, checkpoint format + sha256, band stem, semantic head,
PEFT checkpoint (trainable tensors + base sha256) and fold-back into the unmodified SAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geolesf.errors import ChecksumError, ConfigError, DataError, ModelError
from geolesf.methods.sam import (
    build_sam_model,
    build_sam_segmenter,
    load_sam_state,
    save_sam_checkpoint,
)
from geolesf.methods.sam.checkpoint import (
    dense_sam_state_dict,
    fold_peft_checkpoint,
    read_peft_payload,
)
from geolesf.methods.sam.checkpoint import load as load_peft_model
from geolesf.methods.sam.checkpoint import save as save_peft_checkpoint
from geolesf.methods.sam.stem import BandStem, band_limits, scale_to_255
from geolesf.registry import create_model, list_models


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """A tiny random SAM saved in the official checkpoint format (a plain state dict)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam") / "sam_tiny.pth"
    digest = save_sam_checkpoint(build_sam_model("tiny"), path)
    return path, digest


def test_official_variants_come_from_sam_model_registry():
    from segment_anything.modeling import Sam

    with torch.device("meta"):
        sam = build_sam_model("vit_b")
    assert isinstance(sam, Sam)
    enc = sam.image_encoder
    assert len(enc.blocks) == 12 and enc.patch_embed.proj.out_channels == 768 and enc.img_size == 1024
    assert sum(p.numel() for p in enc.parameters()) == 89_670_912
    with pytest.raises(ConfigError):
        build_sam_model("vit_x")


def test_checkpoint_is_official_format_and_sha256_checked(tiny_ckpt, tmp_path):
    path, digest = tiny_ckpt
    raw = torch.load(path, weights_only=True)
    assert {k.split(".")[0] for k in raw} == {"image_encoder", "prompt_encoder", "mask_decoder"}
    state, found = load_sam_state(path, digest)
    assert found == digest
    with pytest.raises(ChecksumError):
        load_sam_state(path, "0" * 64)
    with pytest.raises(ModelError):
        load_sam_state(tmp_path / "missing.pth")
    with pytest.raises(ModelError):  # a tiny checkpoint is not a vit_b one
        build_sam_segmenter("parser", variant="vit_b", checkpoint=str(path), shape={"encoder_depth": 1})


def test_registered_models_and_loaded_weights(tiny_ckpt):
    path, digest = tiny_ckpt
    assert {"sam-parser", "sam-cobo", "sam-lora", "sam-adapter"} <= set(list_models("sam-*"))
    model = create_model("sam-cobo", host="lora", variant="tiny", checkpoint=str(path))
    assert model.base_sha256 == digest and model.info["host"] == "lora"
    ref = torch.load(path, weights_only=True)
    assert torch.equal(model.sam.mask_decoder.iou_token.weight, ref["mask_decoder.iou_token.weight"])
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("a_q" in n for n in names) and all(not n.startswith("sam.prompt_encoder") for n in names)
    # LoRA host: official init (xavier-normal A and B) by default, zero_b (deviation, B = 0) on request
    assert model.info["lora_init"] == "official"
    qkv = model.sam.image_encoder.blocks[0].attn.qkv
    assert qkv.init == "official" and torch.count_nonzero(qkv.b_q.weight) == qkv.b_q.weight.numel()
    base = build_sam_model("tiny")
    base.load_state_dict(ref)
    base.eval()
    img = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        ref_emb = base.image_encoder(img)
        assert not torch.allclose(model.sam.image_encoder.eval()(img), ref_emb, atol=1e-4)
    zero_b = create_model("sam-lora", variant="tiny", checkpoint=str(path), lora_init="zero_b")
    assert zero_b.info["lora_init"] == "zero_b"
    assert torch.count_nonzero(zero_b.sam.image_encoder.blocks[1].attn.qkv.b_v.weight) == 0
    with torch.no_grad():
        assert torch.equal(zero_b.sam.image_encoder.eval()(img), ref_emb)
    with pytest.raises(ConfigError, match="lora_init"):
        create_model("sam-cobo", host="lora", variant="tiny", lora_init="xavier")
    frozen_dec = create_model("sam-parser", variant="tiny", checkpoint=str(path), train_decoder=False)
    assert sorted(n for n, p in frozen_dec.named_parameters() if p.requires_grad) == [
        "sam.image_encoder.neck.0.vector_S", "sam.image_encoder.neck.2.vector_S"]


def test_semantic_head_tokens_start_from_pretrained(tiny_ckpt):
    path, _ = tiny_ckpt
    model = build_sam_segmenter("parser", variant="tiny", checkpoint=str(path), mode="semantic", num_classes=6)
    ref = torch.load(path, weights_only=True)
    tokens = model.sam.mask_decoder.mask_tokens.weight
    assert tokens.shape[0] == 6
    assert torch.equal(tokens[4], ref["mask_decoder.mask_tokens.weight"][0])
    hyper = model.sam.mask_decoder.output_hypernetworks_mlps[5].layers[0].weight
    assert torch.equal(hyper, ref["mask_decoder.output_hypernetworks_mlps.1.layers.0.weight"])
    out = model(torch.rand(2, 3, 96, 80) * 255)
    assert out.shape == (2, 6, 96, 80)
    with pytest.raises(ConfigError):
        build_sam_segmenter("parser", variant="tiny", mode="semantic", num_classes=1)


def test_band_stem_on_real_4band_raster(shared_data, tiny_ckpt):
    import rasterio

    with rasterio.open(shared_data / "spacenet_solaris" / "ms1.tif") as src:
        image = src.read(window=((0, 96), (0, 96)))
    lo, hi = band_limits(image)
    x = torch.from_numpy(scale_to_255(image, lo, hi))[None]
    assert 0 <= float(x.min()) and float(x.max()) <= 255
    stem = BandStem(4)
    assert torch.equal(stem(x), x[:, :3])  # init: the RGB composite, NIR weight 0
    assert sum(p.numel() for p in stem.parameters()) == 15
    assert torch.equal(BandStem(1)(x[:, :1]), x[:, :1].expand(-1, 3, -1, -1))
    with pytest.raises(DataError):
        stem(x[:, :3])
    with pytest.raises(ConfigError):
        BandStem(4, rgb_bands=[0, 1, 7])
    model = build_sam_segmenter("cobo", variant="tiny", checkpoint=str(tiny_ckpt[0]), in_bands=4)
    assert model.stem.mix.weight.requires_grad
    masks = model.forward_prompted(x, boxes=[torch.tensor([[10.0, 12.0, 60.0, 70.0]])])
    assert masks[0].shape == (1, 1, 96, 96)


@pytest.mark.parametrize("name,kwargs", [("sam-parser", {"scope": "all_conv"}), ("sam-cobo", {"host": "lora"}),
                                         ("sam-cobo", {"host": "adapter"})])
def test_peft_checkpoint_round_trip_and_fold_back(tiny_ckpt, tmp_path, name, kwargs):
    from segment_anything.modeling import Sam

    path, digest = tiny_ckpt
    args = dict(variant="tiny", **kwargs)
    model = create_model(name, checkpoint=str(path), **args)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    model.eval()
    x = torch.rand(1, 3, 100, 100) * 255
    box = [torch.tensor([[5.0, 5.0, 60.0, 80.0]])]
    with torch.no_grad():
        expected = model.forward_prompted(x, boxes=box)[0]
    out = tmp_path / "peft.pt"
    save_peft_checkpoint(out, model, model_name=name, model_args=args, base_checkpoint=path,
                         band_lo=np.zeros(3), band_hi=np.full(3, 255.0), class_ids=[1], class_names=["building"],
                         colors=[(200, 30, 30)], extra={"crop": 100})
    payload, _, _ = read_peft_payload(out)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert sum(t.numel() for t in payload["trainable"].values()) == trainable
    assert payload["base_sha256"] == digest
    assert out.stat().st_size < path.stat().st_size  # only the trainable tensors
    loaded, _, _ = load_peft_model(out)
    with torch.no_grad():
        assert torch.allclose(loaded.forward_prompted(x, boxes=box)[0], expected, atol=1e-5)
    # a different base file with another sha256 is refused
    other = tmp_path / "other.pth"
    torch.manual_seed(9)
    save_sam_checkpoint(build_sam_model("tiny"), other)
    with pytest.raises(ChecksumError):
        load_peft_model(out, base_checkpoint=other)
    if kwargs.get("host") == "adapter":
        with pytest.raises(ModelError):
            dense_sam_state_dict(loaded)
        return
    dense_path = tmp_path / "dense.pth"
    fold_peft_checkpoint(out, dense_path)
    plain = build_sam_model("tiny")  # unmodified segment_anything modules
    assert isinstance(plain, Sam)
    plain.load_state_dict(torch.load(dense_path, weights_only=True), strict=True)
    plain.eval()
    with torch.no_grad():
        img = (x - plain.pixel_mean) / plain.pixel_std
        img = torch.nn.functional.interpolate(img, (128, 128), mode="bilinear", align_corners=False)
        emb = plain.image_encoder(img)
        assert torch.allclose(emb, loaded.sam.image_encoder(img), atol=1e-4)
