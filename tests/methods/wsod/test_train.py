"""Task ``wsod``: train → ndi.pt; ``geolesf evaluate`` on VOC/COCO samples; ``geolesf predict`` → GeoPackage."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import yaml

from geolesf.cli import main as cli_main
from geolesf.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
TINY = {"backbone": "tiny", "width": 16, "hidden": 32}


@pytest.fixture(scope="module")
def trained(shared_data, tmp_path_factory):
    """A two-step run on the real VOC2007 sample (tiny backbone, small proposals)."""
    out = tmp_path_factory.mktemp("wsod") / "run"
    cfg = {
        "task": "wsod", "out": str(out),
        "model": {"name": "ndi-wsod", "args": TINY},
        "data": {"dataset": "voc2007", "root": str(shared_data / "voc_samples" / "mmdet_VOCdevkit"),
                 "split": None, "proposal_max_side": 160, "max_proposals": 150, "scales": [160, 200]},
        "trainer": {"iterations": 2, "iter_size": 1, "lr_steps": [1], "accelerator": "cpu",
                    "evaluate": True, "test_split": None, "test_scales": [160], "test_flip": False},
    }
    path = out.parent / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli_main.main(["train", "--config", str(path)]) == 0
    return out


@pytest.mark.shared_data("voc_samples")
def test_train_writes_checkpoint_metrics_config(trained):
    import torch

    assert {p.name for p in trained.iterdir()} >= {"ndi.pt", "metrics.json", "config.yaml"}
    payload = torch.load(trained / "ndi.pt", weights_only=True)
    assert payload["format"] == "geolesf-wsod/1" and payload["model_name"] == "ndi-wsod"
    assert len(payload["class_names"]) == 20 and payload["model_args"]["num_classes"] == 20
    assert "ndi.features" in payload["state_dict"]
    m = json.loads((trained / "metrics.json").read_text())
    assert m["steps"] == 2 and np.isfinite(m["final_loss"])
    assert {"mil", "refine0", "ncl", "nice", "frcnn_cls"} <= set(m["history"][0])
    ev = m["evaluation"]
    assert 0.0 <= ev["mAP_11point"] <= 1.0 and 0.0 <= ev["CorLoc"] <= 1.0 and ev["images"] == 1
    again = yaml.safe_load((trained / "config.yaml").read_text())
    assert again["task"] == "wsod" and again["model"]["args"] == TINY


@pytest.mark.shared_data("voc_samples")
def test_evaluate_cli_voc2007(trained, shared_data, tmp_path, capsys):
    out = tmp_path / "ev.json"
    # no --data-root: the catalog finds the VOC2007 sample under $GEOLESF_DATA
    rc = cli_main.main(["evaluate", "--checkpoint", str(trained / "ndi.pt"), "--dataset", "voc2007",
                        "--out", str(out), "--option", "scales=[160]", "--option", "flip=false"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "11-point" in printed and "CorLoc" in printed
    res = json.loads(out.read_text())
    assert set(res) >= {"mAP_11point", "mAP_area", "CorLoc", "AP_11point"} and res["images"] == 1
    assert set(res["AP_11point"]) == {"dog", "person"}


@pytest.mark.shared_data("coco_samples")
def test_evaluate_cli_coco_runs_pycocotools(shared_data, tmp_path, capsys):
    """A one-class checkpoint scored on the real COCO samples through pycocotools."""
    import torch

    from geolesf.methods.wsod.checkpoint import save as save_wsod_checkpoint
    from geolesf.methods.wsod.train import WSODConfig, WSODModelConfig
    from geolesf.registry import create_model

    torch.manual_seed(0)
    cfg = WSODConfig(model=WSODModelConfig(args=TINY))
    cfg.data.proposal_max_side, cfg.data.max_proposals = 160, 100
    ckpt = tmp_path / "ndi.pt"
    save_wsod_checkpoint(ckpt, create_model("ndi-wsod", num_classes=1, **TINY), cfg, ["person"])
    rc = cli_main.main(["evaluate", "--checkpoint", str(ckpt), "--dataset", "coco2017",
                        "--data-root", str(shared_data / "coco_samples"), "--option", "scales=[160]",
                        "--option", "flip=false", "--option", "limit=2"])
    assert rc == 0
    assert "AP50" in capsys.readouterr().out
    res = json.loads((tmp_path / "evaluation_coco2017.json").read_text())
    assert 0.0 <= res["AP"] <= 1.0 and res["images"] == 2


@pytest.mark.shared_data("voc_samples")
def test_evaluate_cli_bad_data_root_is_a_clear_error(trained, tmp_path, capsys):
    rc = cli_main.main(["evaluate", "--checkpoint", str(trained / "ndi.pt"), "--dataset", "voc2007",
                        "--data-root", str(tmp_path)])
    assert rc == 2 and "no VOC2007/Annotations" in capsys.readouterr().err


@pytest.mark.shared_data("voc_samples")
def test_evaluate_rejects_unknown_option(trained):
    from geolesf.methods.wsod.evaluate import evaluate_checkpoint

    with pytest.raises(ConfigError, match="--option bogus"):
        evaluate_checkpoint(trained / "ndi.pt", dataset="voc2007", data_root=None, what=None, out=None,
                            device="cpu", batch_size=None, options={"bogus": 1})


@pytest.mark.shared_data("voc_samples")
def test_predict_cli_real_geotiff_writes_styled_gpkg_in_scene_crs(trained, shared_data, tmp_path, capsys):
    import geopandas as gpd
    import rasterio
    from rasterio.windows import Window

    scene = tmp_path / "crop.tif"
    with rasterio.open(shared_data / "rasterio_landsat7" / "RGB.byte.tif") as src:
        win = Window(250, 250, 220, 180)
        profile = src.profile
        profile.update(width=220, height=180, transform=src.window_transform(win))
        data = src.read(window=win)
        crs = src.crs
    with rasterio.open(scene, "w", **profile) as dst:
        dst.write(data)
    out = tmp_path / "boxes.gpkg"
    rc = cli_main.main(["predict", str(scene), "--model", "ndi-wsod", "--checkpoint", str(trained / "ndi.pt"),
                        "--out", str(out), "--tile", "128", "--overlap", "32", "--option", "score_threshold=0.0"])
    assert rc == 0 and "boxes" in capsys.readouterr().out
    gdf = gpd.read_file(out, layer="boxes")
    assert gdf.crs == crs
    assert len(gdf) > 0 and {"class_id", "class_name", "score"} <= set(gdf.columns)
    with rasterio.open(scene) as src:
        left, bottom, right, top = src.bounds
    x0, y0, x1, y1 = gdf.total_bounds
    assert left - 1e-6 <= x0 and x1 <= right + 1e-6 and bottom - 1e-6 <= y0 and y1 <= top + 1e-6
    with sqlite3.connect(out) as con:
        styles = con.execute("SELECT f_table_name FROM layer_styles WHERE useAsDefault = 1").fetchall()
    assert styles == [("boxes",)]
    assert out.with_suffix(".qml").exists()


@pytest.mark.shared_data("voc_samples")
def test_predict_refuses_wrong_model_name(trained, tmp_path, shared_data):
    rc = cli_main.main(["predict", str(shared_data / "rasterio_landsat7" / "RGB.byte.tif"), "--model", "unet",
                        "--checkpoint", str(trained / "ndi.pt"), "--out", str(tmp_path / "x.gpkg")])
    assert rc == 2 and not (tmp_path / "x.gpkg").exists()


def test_shipped_configs_load():
    from geolesf.config import load_config
    from geolesf.methods.wsod.train import WSODConfig

    for name in ("ndi_vgg16_voc07.yaml", "ndi_vgg16_coco17.yaml"):
        cfg = load_config(WSODConfig, REPO / "configs" / "wsod" / name)
        assert cfg.task == "wsod" and cfg.model.args["backbone"] == "vgg16"
    voc = load_config(WSODConfig, REPO / "configs" / "wsod" / "ndi_vgg16_voc07.yaml")
    assert voc.trainer.iterations == 70000 and voc.trainer.lr_steps == [60000] and voc.trainer.iter_size == 4


def test_lr_schedule_warmup_and_steps():
    from geolesf.methods.wsod.train import WSODTrainerConfig, lr_factor

    tr = WSODTrainerConfig()
    assert lr_factor(0, tr) == pytest.approx(1 / 3)
    assert lr_factor(250, tr) == pytest.approx(2 / 3)
    assert lr_factor(500, tr) == pytest.approx(1.0)
    assert lr_factor(59999, tr) == pytest.approx(1.0)
    assert lr_factor(60000, tr) == pytest.approx(0.1)


def test_train_set_scales_and_flips_proposals_with_the_image():
    from geolesf.methods.wsod.train import WSODTrainSet

    image = np.zeros((100, 200, 3), np.uint8)
    image[10:30, 20:60] = 255  # a bright block inside the proposal

    class OneImage:
        classes = ("thing",)

        def __len__(self):
            return 1

        def __getitem__(self, i):
            return {"image": image, "image_id": "a", "image_labels": np.ones(1, np.float32)}

    proposal = np.array([[20, 10, 59, 29]], np.float32)
    seen = set()
    for seed in range(8):
        item = WSODTrainSet(OneImage(), lambda i, im: proposal, [50], 1000, True, seed)[0]
        assert item["image"].shape == (50, 100, 3)  # shorter side 100 -> 50
        x1, y1, x2, y2 = np.round(item["rois"][0]).astype(int)
        assert item["image"][y1 + 1:y2, x1 + 1:x2].min() == 255  # the box still frames the block
        seen.add(int(x1))
    assert seen == {10, 70}  # both the original and the mirrored position occur
