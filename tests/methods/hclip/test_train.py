"""Task hclip end to end: train (Lightning) → checkpoint → evaluate (CLI) → predict a real GeoTIFF crop (CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from geolesf.cli.main import main
from geolesf.config import load_config
from geolesf.errors import ModelError
from geolesf.methods.hclip.checkpoint import load as load_hclip_checkpoint
from geolesf.methods.hclip.train import CONFIG, run_config

TINY_SET = ["model.tiny=true", "model.block_size=16", "model.hidden=32", "model.guidance_dim=16",
            "model.text_guidance_dim=16", "model.decoder_dims=[16,8]", "model.decoder_guidance_dims=[16,8]",
            "data.crop=64", "trainer.max_steps=2", "trainer.batch_size=2", "trainer.warmup_steps=1",
            "trainer.accelerator=cpu"]


CONFIG_PATH = Path(__file__).resolve().parents[3] / "geolesf" / "configs" / "clip" / "hclip_vitb16_coco_stuff.yaml"


@pytest.fixture(scope="module")
def run(tmp_path_factory, shared_data):
    """``geolesf train`` with the shipped config, shrunk to the tiny random-init CLIP by --set."""
    out = tmp_path_factory.mktemp("hclip_run")
    sets = [f"out={out}", "data.dataset=voc", f"data.root={shared_data}/voc_samples/deeplabv3plus_val", *TINY_SET]
    assert main(["train", "--config", str(CONFIG_PATH), *[a for s in sets for a in ("--set", s)]]) == 0
    return out


def test_shipped_config_loads_unchanged():
    cfg = load_config(CONFIG, CONFIG_PATH)
    assert cfg.task == "hclip" and cfg.model.clip_model == "ViT-B-16" and not cfg.model.tiny
    assert cfg.model.block_size == 32 and cfg.data.crop == 384 and cfg.trainer.max_steps == 80000
    assert cfg.trainer.lr == 2e-4 and cfg.trainer.clip_lr_multiplier == 0.075
    with pytest.raises(ModelError, match="clip_checkpoint .*not found"):
        run_config(load_config(CONFIG, CONFIG_PATH, ["model.clip_checkpoint=/nonexistent/ViT-B-16.pt",
                                                     "data.dataset=voc", "data.root=/nonexistent"]))


@pytest.mark.shared_data("voc_samples")
def test_train_writes_run_folder(run):
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 2 and np.isfinite(metrics["final_loss"])
    # tiny CLIP, b = 16: 5,760 rotation + 12 DCRC + 6,016 positional (tests/methods/hclip/test_model.py)
    assert metrics["classes"] == 20 and metrics["parameters"]["peft_trainable"] == 11_788
    assert (run / "config.yaml").is_file()
    model, payload, digest = load_hclip_checkpoint(run / "hclip.pt")
    assert payload["format"] == "geolesf-hclip/1" and payload["clip_state"] and digest == metrics["sha256"]
    assert model.class_names[0] == "aeroplane"
    # the trained rotation parameters were stored and restored
    assert model.relation.params["image"].abs().sum() > 0


@pytest.mark.shared_data("voc_samples")
def test_cli_evaluate_miou(run, shared_data, capsys):
    rc = main(["evaluate", "--checkpoint", str(run / "hclip.pt"), "--dataset", "voc", "--data-root",
               str(shared_data / "voc_samples" / "deeplabv3plus_val"), "--option", "short_side=64",
               "--option", "window=64"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "voc: mIoU" in out
    m = json.loads((run / "evaluation_voc.json").read_text())
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (20, 20) and cm.sum() == m["pixels"] > 0
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    assert m["mIoU"] == pytest.approx(float(np.mean(tp[union > 0] / union[union > 0])))


@pytest.mark.shared_data("voc_samples")
def test_cli_predict_geotiff_with_classes(run, shared_data, tmp_path, capsys):
    import rasterio
    from rasterio.windows import Window

    from geolesf.io.writers import read_class_names

    src_path = shared_data / "rasterio_landsat7" / "RGB.byte.tif"
    crop = tmp_path / "crop.tif"
    with rasterio.open(src_path) as src:
        win = Window(300, 300, 96, 80)
        profile = src.profile | {"width": 96, "height": 80, "transform": src.window_transform(win)}
        with rasterio.open(crop, "w", **profile) as dst:
            dst.write(src.read(window=win))
        crs = src.crs
    out = tmp_path / "seg.tif"
    rc = main(["predict", str(crop), "--model", "hclip", "--checkpoint", str(run / "hclip.pt"),
               "--classes", "building,road,tree,water", "--out", str(out), "--tile", "64", "--overlap", "16",
               "--no-preview"])
    assert rc == 0 and out.is_file()
    with rasterio.open(out) as ds, rasterio.open(crop) as ref:
        assert ds.crs == crs and ds.transform == ref.transform and (ds.width, ds.height) == (96, 80)
        values = set(np.unique(ds.read(1)).tolist())
        cmap = ds.colormap(1)
        assert len({cmap[k][:3] for k in range(4)}) == 4  # one distinct colour-table entry per named class
    names = read_class_names(out)
    assert names == {0: "building", 1: "road", 2: "tree", 3: "water"}
    assert values - {ds.nodata} <= set(names)


@pytest.mark.shared_data("voc_samples")
def test_predict_without_classes_of_wrong_model_is_error(run, shared_data, tmp_path, capsys):
    rc = main(["predict", str(shared_data / "rasterio_landsat7" / "RGB.byte.tif"), "--model", "unet",
               "--checkpoint", str(run / "hclip.pt"), "--out", str(tmp_path / "x.tif")])
    assert rc == 2
    assert "hclip" in capsys.readouterr().err


def test_upsampled_argmax_matches_full_upsampling():
    import torch
    from torch.nn import functional as F

    from geolesf.methods.hclip.evaluate import upsampled_argmax

    logits = torch.randn(37, 9, 13)
    full = F.interpolate(logits[None], size=(40, 50), mode="bilinear", align_corners=False)[0].argmax(0)
    assert np.array_equal(upsampled_argmax(logits, (40, 50), chunk=8), full.numpy())


@pytest.mark.shared_data("voc_samples")
def test_sliding_window_covers_image_and_matches_single_window(run):
    import torch

    from geolesf.methods.hclip.evaluate import sliding_logits

    model, _, _ = load_hclip_checkpoint(run / "hclip.pt")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)
    names = ["road", "tree"]
    tiled = sliding_logits(model, image, names, short_side=64, window=64, stride=32)
    assert tiled.shape == (2, 64, 96) and torch.isfinite(tiled).all()
    whole = sliding_logits(model, image, names, short_side=64, window=96, stride=96)
    assert whole.shape == (2, 64, 96)
    with torch.no_grad():
        x = model.normalise_uint8(torch.from_numpy(image.transpose(2, 0, 1).copy())[None])
        assert torch.allclose(whole, model(x, names)[0], atol=1e-5)


def _ade_scored_pixels(folder):
    """Pixels of ADE_train_00016869 that the ADE-150 view scores, derived from the raw files.

    Read independently of geolesf: the JPEG's size, the ``_seg.png`` class code R/10·256 + G and the
    JSON's object names. Unscored: code 0 (unlabelled) and objects whose WordNet synonyms name none of
    the 150 ADE classes — here only "central reservation" (the median strip; ADE-150 has road and
    sidewalk, not it). Every other object of this image (building, road, sky, tree, car, person, …)
    is an ADE-150 class.
    """
    from PIL import Image

    stem = folder / "ADE_train_00016869"
    with Image.open(f"{stem}.jpg") as im:
        w, h = im.size
    with Image.open(f"{stem}_seg.png") as im:
        rgb = np.asarray(im.convert("RGB")).astype(np.int64)
    code = rgb[..., 0] // 10 * 256 + rgb[..., 1]
    objects = json.loads(Path(f"{stem}.json").read_bytes().decode("latin-1"))["annotation"]["object"]
    ndx = {o["name"]: int(o["name_ndx"]) for o in objects if int(o.get("parts", {}).get("part_level", 0)) == 0}
    unlabelled = int((code == 0).sum())
    median_strip = int((code == ndx["central reservation"]).sum())
    return (h, w), unlabelled, median_strip


@pytest.mark.shared_data("ade20k_samples", "voc_samples")
def test_cli_evaluate_ade20k_full_format_samples(run, shared_data, tmp_path, capsys):
    """Zero-shot ADE-150 scoring straight from the full-format samples (their 150-class view).

    Scored pixels of the first sample: 1536·2048 − 89,604 (unlabelled) − 43,609 ("central
    reservation", not an ADE-150 class) = 3,012,515 (see :func:`_ade_scored_pixels`).
    """
    out = tmp_path / "ade.json"
    rc = main(["evaluate", "--checkpoint", str(run / "hclip.pt"), "--dataset", "ade20k", "--data-root",
               str(shared_data / "ade20k_samples"), "--out", str(out), "--option", "short_side=64",
               "--option", "window=64", "--option", "max_images=1"])
    assert rc == 0 and "ade20k: mIoU" in capsys.readouterr().out
    m = json.loads(out.read_text())
    assert len(m["per_class_IoU"]) == 150 and m["images"] == 1
    cm = np.array(m["confusion_matrix"])
    (h, w), unlabelled, median_strip = _ade_scored_pixels(shared_data / "ade20k_samples")
    assert (h, w, unlabelled, median_strip) == (1536, 2048, 89_604, 43_609)
    assert cm.sum() == m["pixels"] == h * w - unlabelled - median_strip == 3_012_515
