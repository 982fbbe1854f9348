"""Task ``wsss`` on the real samples: VOC CAM seeds + evaluator agreement, single-stage, aerial demo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from geolesf.cli.main import main
from geolesf.config import load_config
from geolesf.methods.wsss.train import CONFIG, run_config

CONFIGS = Path(__file__).resolve().parents[3] / "geolesf" / "configs" / "wsss"
SIMPLE = {"backbone": "simple", "args": {"width": 8, "depth": 3}, "embed_dim": 8, "hidden": 16}
VIT = {"backbone": "vit", "args": {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 16, "img_size": 64},
       "embed_dim": 8, "hidden": 16}


def _cfg(out, **sections):
    data = {"task": "wsss", "out": str(out), "trainer": {"accelerator": "cpu", "batch_size": 3, "lr": 0.01,
                                                         "num_threads": 1}}
    for k, v in sections.items():
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k] = {**data[k], **v}
        else:
            data[k] = v
    return load_config(CONFIG, initial=data)


@pytest.fixture(scope="module")
def voc_cam(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("voc_cam")
    cfg = _cfg(out, method="cam", model=SIMPLE,
               data={"dataset": "voc2012", "root": str(shared_data / "voc_samples" / "deeplabv3plus_val"),
                     "split": "val", "crop": 128, "scale_range": [0.3, 0.4]},
               cam={"scales": [1.0, 0.5], "flip": True},
               trainer={"max_steps": 3, "evaluate": False})
    run_config(cfg)
    return out


def _direct_seed_miou(ckpt: Path, root: Path, max_side: int, what: str = "seeds") -> float:
    """Seeds (or, ``what="final"``, the segmentation head's argmax) scored independently of the
    evaluator: palette masks decoded here, IoU with numpy."""
    from geolesf.data.benchmarks.voc import decode_palette_mask
    from geolesf.methods.wsss.cam import cams_to_seeds, multiscale_cams
    from geolesf.methods.wsss.checkpoint import load as load_wsss_checkpoint
    from geolesf.methods.wsss.data import to_tensor

    b = load_wsss_checkpoint(ckpt)
    cm = np.zeros((21, 21), dtype=np.int64)
    for name in ("1", "23", "114"):
        image = np.array(Image.open(root / f"{name}_image.png").convert("RGB"))
        mask = decode_palette_mask(np.array(Image.open(root / f"{name}_target.png").convert("RGB")))
        f = max_side / max(mask.shape)
        size = (round(mask.shape[0] * f), round(mask.shape[1] * f))
        x = F.interpolate(to_tensor(image, b.mean, b.std)[None], size=size, mode="bilinear", align_corners=False)
        m = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=size, mode="nearest")[0, 0].long().numpy()
        labels = torch.zeros(1, 20)
        for c in set(np.unique(m).tolist()) - {0, 255}:
            labels[0, c - 1] = 1
        with torch.no_grad():
            if what == "final":  # segmentation head on the input rounded to the patch multiple, flip-averaged
                d = b.cam_net.size_divisor
                xin = F.interpolate(x, size=tuple(max(d, round(s / d) * d) for s in size), mode="bilinear",
                                    align_corners=False)
                prob = b.model(xin).softmax(1)
                prob = 0.5 * (prob + b.model(xin.flip(-1)).softmax(1).flip(-1))
                seeds = F.interpolate(prob, size=size, mode="bilinear", align_corners=False).argmax(1)[0].numpy()
            else:
                cams = multiscale_cams(b.cam_net, x, scales=b.cam["scales"], flip=b.cam["flip"])
                seeds = cams_to_seeds(cams, labels, b.cam["bg_threshold"])[0][0].numpy()
        keep = m != 255
        cm += np.bincount(m[keep] * 21 + seeds[keep], minlength=441).reshape(21, 21)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    return float(np.mean(tp[union > 0] / union[union > 0]))


@pytest.mark.shared_data("voc_samples")
def test_voc_cam_run_folder_and_seed_evaluator_agrees_with_direct_computation(voc_cam, shared_data, capsys):
    ckpt = voc_cam / "model.pt"
    for name in ("model.pt", "config.yaml", "history.json", "metrics.json"):
        assert (voc_cam / name).is_file()
    payload = torch.load(ckpt, weights_only=True)
    assert payload["format"] == "geolesf-wsss/1" and payload["cam"]["bg_threshold"] == 0.15
    root = shared_data / "voc_samples" / "deeplabv3plus_val"
    out = voc_cam / "seeds.json"
    code = main(["evaluate", "--checkpoint", str(ckpt), "--dataset", "voc2012", "--data-root", str(root),
                 "--what", "seeds", "--out", str(out), "--option", "max_side=128"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "seeds mIoU" in printed and str(out) in printed
    m = json.loads(out.read_text())
    assert m["images"] == 3 and m["what"] == "seeds"
    assert m["mIoU"] == pytest.approx(_direct_seed_miou(ckpt, root, 128), abs=1e-12)
    assert 0.0 < m["mIoU"] < 1.0 and 0.0 < m["coverage"] <= 1.0


@pytest.mark.shared_data("voc_samples")
def test_voc_cam_pseudo_stage_and_final_needs_single_stage(voc_cam, shared_data, capsys):
    root = shared_data / "voc_samples" / "deeplabv3plus_val"
    base = ["evaluate", "--checkpoint", str(voc_cam / "model.pt"), "--dataset", "voc2012", "--data-root", str(root),
            "--option", "max_side=96", "--option", "scales=[1.0]"]
    assert main(base + ["--what", "pseudo", "--out", str(voc_cam / "pseudo.json")]) == 0
    m = json.loads((voc_cam / "pseudo.json").read_text())
    from geolesf.methods.wsss.checkpoint import load as load_wsss_checkpoint
    from geolesf.methods.wsss.data import open_dataset
    from geolesf.methods.wsss.evaluate import evaluate_bundle

    direct = evaluate_bundle(load_wsss_checkpoint(voc_cam / "model.pt"), open_dataset("voc2012", root, "val"),
                             "pseudo", {"max_side": 96, "scales": [1.0], "progress": False})
    assert m["what"] == "pseudo" and m["images"] == direct["images"] == 3
    assert m["mIoU"] == direct["mIoU"] and m["coverage"] == direct["coverage"]  # the CLI passes every option
    capsys.readouterr()
    assert main(base + ["--what", "final"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "single-stage" in err and len(err.splitlines()) == 1


@pytest.mark.shared_data("voc_samples")
def test_single_stage_vit_on_voc_scores_every_stage(tmp_path, shared_data):
    cfg = _cfg(tmp_path / "ss", method="single-stage", model=VIT,
               data={"dataset": "voc2012", "root": str(shared_data / "voc_samples" / "deeplabv3plus_val"),
                     "split": "val", "crop": 64, "scale_range": [0.2, 0.2]},
               cam={"scales": [1.0]},
               single_stage={"bg_threshold": 0.3, "margin": 0.05, "radius": 2},
               trainer={"max_steps": 2, "eval_max_side": 64})
    run_config(cfg)
    m = json.loads((tmp_path / "ss" / "metrics.json").read_text())
    assert m["steps"] == 2
    root = shared_data / "voc_samples" / "deeplabv3plus_val"
    ckpt = tmp_path / "ss" / "model.pt"
    for stage in ("seeds", "final"):  # recomputed here: model outputs → confusion matrix with numpy
        assert m[stage]["images"] == 3
        assert m[stage]["mIoU"] == pytest.approx(_direct_seed_miou(ckpt, root, 64, stage), abs=1e-12), stage
    # the pseudo stage: the evaluator run directly on the saved checkpoint gives the recorded numbers
    from geolesf.methods.wsss.checkpoint import load as load_wsss_checkpoint
    from geolesf.methods.wsss.data import open_dataset
    from geolesf.methods.wsss.evaluate import evaluate_bundle

    direct = evaluate_bundle(load_wsss_checkpoint(ckpt), open_dataset("voc2012", root, "val"), "pseudo",
                             {"max_side": 64, "progress": False})
    assert m["pseudo"]["images"] == 3
    assert m["pseudo"]["mIoU"] == direct["mIoU"] and m["pseudo"]["coverage"] == direct["coverage"]
    # the refinement changes the seeds (a pseudo stage equal to the seed stage would test nothing)
    assert m["pseudo"]["mIoU"] != m["seeds"]["mIoU"] or m["pseudo"]["per_class_IoU"] != m["seeds"]["per_class_IoU"]
    hist = json.loads((tmp_path / "ss" / "history.json").read_text())
    assert {"cls", "seg", "aa", "lr", "loss"} <= set(hist[-1])


@pytest.mark.shared_data("rs_seg_tiles")
def test_aerial_demo_cam_from_tags_derived_from_loveda_masks(tmp_path, shared_data, capsys):
    """Train a tiny CAM on image-level tags of LoveDA crops; its seeds beat the untrained model's."""
    from geolesf.methods.wsss.checkpoint import build_model
    from geolesf.methods.wsss.checkpoint import load as load_wsss_checkpoint
    from geolesf.methods.wsss.data import open_dataset
    from geolesf.methods.wsss.evaluate import evaluate_bundle

    data = {"dataset": "loveda", "root": str(shared_data / "rs_seg_tiles"), "crop": 64, "scale_range": [1.0, 1.0],
            "options": {"tile": 64, "downsample": 4, "min_fraction": 0.02}}
    cfg = _cfg(tmp_path / "aerial", method="cam", model={"backbone": "simple", "args": {"width": 16, "depth": 3}},
               data=data, cam={"scales": [1.0]}, trainer={"epochs": 20, "max_steps": 120, "batch_size": 8})
    run_config(cfg)
    m = json.loads((tmp_path / "aerial" / "metrics.json").read_text())
    assert m["steps"] == 120  # epochs must not stop the run before max_steps
    print(f"\naerial demo (LoveDA, 48 crops of 64 px): seed mIoU {m['seeds']['mIoU']:.4f}, "
          f"pseudo mIoU {m['pseudo']['mIoU']:.4f}")
    assert m["train_images"] == 48 and m["seeds"]["images"] == 48
    bundle = load_wsss_checkpoint(tmp_path / "aerial" / "model.pt")
    assert bundle.cam["bg_threshold"] is None and bundle.class_ids == [1, 2, 3, 4, 5, 6, 7]
    torch.manual_seed(0)  # the same initialisation as the run (trainer.seed 0)
    bundle.model = build_model("cam", bundle.model_args).eval()
    ds = open_dataset("loveda", shared_data / "rs_seg_tiles", **data["options"])
    untrained = evaluate_bundle(bundle, ds, "seeds", {"progress": False})["mIoU"]
    print(f"untrained seed mIoU {untrained:.4f}")
    assert m["seeds"]["mIoU"] > untrained + 0.02


@pytest.mark.shared_data("rs_seg_tiles")
def test_usage_method_trains_with_the_temperature_rule(tmp_path, shared_data):
    cfg = _cfg(tmp_path / "usage", method="usage", model=SIMPLE,
               data={"dataset": "potsdam", "root": str(shared_data / "rs_seg_tiles"), "crop": 64,
                     "scale_range": [1.0, 1.0], "options": {"tile": 128, "downsample": 2}},
               trainer={"max_steps": 2, "evaluate": False})
    run_config(cfg)
    payload = torch.load(tmp_path / "usage" / "model.pt", weights_only=True)
    assert payload["method"] == "usage" and payload["cam"]["pool"] == 1.0  # τ_CNN
    hist = json.loads((tmp_path / "usage" / "history.json").read_text())
    assert {"gen", "reg", "loss"} <= set(hist[-1])


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    from geolesf.config import peek_task

    assert peek_task(path) == "wsss"
    cfg = load_config(CONFIG, path)
    assert cfg.method in ("cam", "usage", "single-stage")


def test_shipped_configs_cover_every_method():
    assert sorted(CONFIGS.glob("*.yaml")), f"no shipped configs in {CONFIGS}"
    methods = {load_config(CONFIG, p).method for p in CONFIGS.glob("*.yaml")}
    assert methods == {"cam", "usage", "single-stage"}
