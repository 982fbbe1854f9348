"""Task sam-peft end to end on real imagery: SpaceNet footprints as prompts, aerial tiles for the
semantic head, the CLI train → predict (georeferenced mask, same CRS) → evaluate chain."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geolesf.cli import main as cli_main
from geolesf.config import load_config
from geolesf.errors import ConfigError
from geolesf.methods.sam import build_sam_model, save_sam_checkpoint
from geolesf.methods.sam.train import CONFIG, dice_bce_loss, mask_scores, run_config

REPO = Path(__file__).resolve().parents[3]
TINY = ["--set", "model.variant=tiny", "--set", "trainer.accelerator=cpu", "--set", "data.crop=160",
        "--set", "trainer.epochs=2", "--set", "trainer.steps_per_epoch=3", "--set", "trainer.batch_size=2",
        "--set", "trainer.lr=0.001", "--set", "trainer.warmup_epochs=0"]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam") / "sam_tiny.pth"
    save_sam_checkpoint(build_sam_model("tiny"), path)
    return path


def _prompt_cfg(shared_data, ckpt, out, name, args):
    sn = shared_data / "spacenet_solaris"
    return load_config(CONFIG, initial={
        "task": "sam-peft", "out": str(out),
        "model": {"name": name, "variant": "tiny", "checkpoint": str(ckpt), "args": args},
        "data": {"mode": "prompt", "image": str(sn / "sample_geotiff.tif"), "labels": str(sn / "geotiff_labels.geojson"),
                 "crop": 192, "box_jitter": 5, "class_name": "building"},
        "trainer": {"epochs": 3, "steps_per_epoch": 4, "batch_size": 2, "lr": 1e-3, "warmup_epochs": 0,
                    "accelerator": "cpu"}})


def test_losses_and_scores():
    t = torch.zeros(2, 8, 8)
    t[:, 2:6, 2:6] = 1
    good, bad = (t * 20 - 10), -(t * 20 - 10)
    assert dice_bce_loss(good, t) < dice_bce_loss(bad, t)
    dice, iou = mask_scores(good, t)
    assert dice == [1.0, 1.0] and iou == [1.0, 1.0]
    assert mask_scores(bad, t)[0] == [0.0, 0.0]


@pytest.mark.parametrize("name,args,prompt", [("sam-parser", {"scope": "neck"}, "box"),
                                              ("sam-cobo", {"host": "adapter"}, "box"),
                                              ("sam-lora", {}, "point")])
def test_fine_tuning_on_spacenet_crop_reduces_the_loss(shared_data, tiny_ckpt, tmp_path, name, args, prompt):
    cfg = _prompt_cfg(shared_data, tiny_ckpt, tmp_path / "run", name, args)
    cfg.data.prompt = prompt
    out = run_config(cfg)
    m = json.loads((out / "metrics.json").read_text())
    assert m["before"]["objects"] > 0 and m["before"]["objects"] == m["after"]["objects"]
    assert m["after"]["loss"] < m["before"]["loss"]  # held-out rows, same prompts
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 3
    payload = torch.load(out / "peft.pt", weights_only=True)
    assert payload["format"] == "geolesf-sam-peft/1"
    assert sum(t.numel() for t in payload["trainable"].values()) == m["trainable_parameters"]
    assert (out / "config.yaml").is_file()


def test_missing_base_checkpoint_is_a_config_error(shared_data, tmp_path):
    cfg = _prompt_cfg(shared_data, tmp_path / "x.pth", tmp_path / "run", "sam-parser", {})
    cfg.model.checkpoint = None
    with pytest.raises(ConfigError, match="model.checkpoint"):
        run_config(cfg)


def test_cli_train_predict_evaluate_prompted(shared_data, tiny_ckpt, tmp_path, capsys):
    import geopandas as gpd
    import rasterio

    sn = shared_data / "spacenet_solaris"
    run = tmp_path / "run"
    rc = cli_main.main(["train", "--config", str(REPO / "geolesf/configs/sam/cobo_lora_vit_b_aerial.yaml"),
                        "--set", f"model.checkpoint={tiny_ckpt}", "--set", f"out={run}",
                        "--set", f"data.image={sn / 'sample_geotiff.tif'}",
                        "--set", f"data.labels={sn / 'geotiff_labels.geojson'}", *TINY])
    assert rc == 0 and (run / "peft.pt").is_file()
    boxes = gpd.read_file(sn / "geotiff_labels.geojson")[["geometry"]].iloc[:12].to_crs(4326)
    boxes.to_file(tmp_path / "boxes.gpkg", driver="GPKG")  # another CRS: reprojected to the scene's
    mask = tmp_path / "mask.tif"
    rc = cli_main.main(["predict", str(sn / "sample_geotiff.tif"), "--model", "sam-cobo", "--checkpoint",
                        str(run / "peft.pt"), "--prompts", str(tmp_path / "boxes.gpkg"), "--out", str(mask)])
    assert rc == 0
    with rasterio.open(sn / "sample_geotiff.tif") as src, rasterio.open(mask) as dst:
        assert dst.crs == src.crs and dst.transform == src.transform and dst.shape == src.shape
        arr = dst.read(1)
        assert dst.dtypes[0] == "uint8" and set(np.unique(arr)) <= {0, 1}
        assert json.loads(dst.tags()["CLASS_NAMES"]) == {"0": "background", "1": "building"}
    assert (tmp_path / "mask.qml").is_file()
    rc = cli_main.main(["evaluate", "--checkpoint", str(run / "peft.pt"), "--out", str(tmp_path / "ev.json"),
                        "--option", f"image={sn / 'sample_geotiff.tif'}",
                        "--option", f"labels={sn / 'geotiff_labels.geojson'}"])
    assert rc == 0
    ev = json.loads((tmp_path / "ev.json").read_text())
    assert 0 <= ev["dice"] <= 1 and ev["objects"] >= 43
    # a semantic-only call on a prompt checkpoint is a one-line user error
    rc = cli_main.main(["predict", str(sn / "sample_geotiff.tif"), "--checkpoint", str(run / "peft.pt"),
                        "--out", str(tmp_path / "x.tif")])
    assert rc == 2 and "--prompts" in capsys.readouterr().err


@pytest.mark.shared_data("rs_seg_tiles")
def test_cli_semantic_train_and_tiled_predict_keeps_crs(shared_data, tiny_ckpt, tmp_path):
    import rasterio

    tiles = shared_data / "rs_seg_tiles" / "potsdam"
    img, ann = tiles / "img" / "2_10_0_0_512_512.png", tiles / "ann" / "2_10_0_0_512_512.png"
    run = tmp_path / "sem"
    rc = cli_main.main(["train", "--config", str(REPO / "geolesf/configs/sam/cobo_adapter_vit_b_aerial.yaml"),
                        "--set", f"model.checkpoint={tiny_ckpt}", "--set", f"out={run}",
                        "--set", f"data.images=[{img}]", "--set", f"data.masks=[{ann}]",
                        "--set", "data.val_images=[]", "--set", "data.val_masks=[]",
                        "--set", "data.class_names={0: impervious, 1: building, 2: low_vegetation, 3: tree, "
                        "4: car, 5: clutter}", *TINY])
    assert rc == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["after"]["loss"] < m["before"]["loss"] and m["after"]["mIoU"] is not None
    rc = cli_main.main(["evaluate", "--checkpoint", str(run / "peft.pt"), "--out", str(tmp_path / "ev.json"),
                        "--option", f"images=[{img}]", "--option", f"masks=[{ann}]"])
    assert rc == 0
    ev = json.loads((tmp_path / "ev.json").read_text())
    assert abs(ev["mIoU"] - m["after"]["mIoU"]) < 1e-6  # same tile, same crops, reloaded checkpoint
    scene = shared_data / "rasterio_landsat7" / "RGB.byte.tif"
    out = tmp_path / "classes.tif"
    rc = cli_main.main(["predict", str(scene), "--model", "sam-cobo", "--checkpoint", str(run / "peft.pt"),
                        "--out", str(out), "--tile", "128", "--overlap", "16", "--no-preview"])
    assert rc == 0
    with rasterio.open(scene) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs and dst.transform == src.transform and dst.shape == src.shape
        values = set(np.unique(dst.read(1))) - {dst.nodata}
        assert values <= set(range(6))
