"""Run folders say what they are from the start: ``config.yaml`` is written before training."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from geolesf.config import LightningOptions, TrainConfig
from geolesf.training import start_run

METHODS = Path(__file__).resolve().parents[1] / "geolesf" / "methods"


def test_start_run_writes_the_config_first(tmp_path):
    cfg = TrainConfig(out=str(tmp_path / "run"))
    out = start_run(cfg.out, LightningOptions(), record=cfg)
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml"]
    assert yaml.safe_load((out / "config.yaml").read_text())["out"] == cfg.out
    assert list(start_run(tmp_path / "bare", LightningOptions()).iterdir()) == []


def test_every_method_passes_its_config_to_start_run():
    """hsi writes config.yaml itself once its data are read (methods/hsi/train.py run_single)."""
    calls = {}
    for path in METHODS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "start_run":
                calls.setdefault(path.parent.name, []).append({k.arg for k in node.keywords})
    assert set(calls) >= {"sam", "wsod", "wsss", "hclip"}
    missing = [m for m, kws in calls.items() if m != "hsi" and any("record" not in k for k in kws)]
    assert missing == []


def test_unet_writes_the_config_before_training(shared_data, tmp_path, monkeypatch):
    from geolesf.config import load_config
    from geolesf.methods.unet import train as unet_train

    cfg = load_config(unet_train.CONFIG, "segmentation/unet_spacenet_buildings", [f"out={tmp_path / 'run'}"])

    def stop(*args, **kwargs):
        raise RuntimeError("stopped in training")

    monkeypatch.setattr(unet_train, "train_segmenter", stop)
    with pytest.raises(RuntimeError, match="stopped in training"):
        unet_train.run_config(cfg)
    # labels.tif: the footprints burnt onto the image grid before training
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.yaml", "labels.tif"]
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]["image"] == "spacenet_sample"
