"""hsi run records: config.yaml before training, metrics.json at the end, and trainer.scene_map: false
(test pixels only, no class map), on a real Indian Pines crop."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io

from geolesf.cli.main import main
from geolesf.config import DataConfig, ModelConfig, TrainConfig, TrainerConfig
from geolesf.methods.hsi import train as hsi_run
from geolesf.methods.hsi.patch_training import PatchPredictor
from geolesf.methods.hsi.train import run_hsi
from tests.checkpoints import register_tiny_patch_net


register_tiny_patch_net("test-scenemap-net")


@pytest.fixture(scope="module")
def crop(shared_data, tmp_path_factory):
    cube = scipy.io.loadmat(shared_data / "indian_pines" / "IP_200_M.mat")["data_M"][:40, :, ::10]
    gt = scipy.io.loadmat(shared_data / "indian_pines" / "Indian_pines_gt.mat")["indian_pines_gt"][:40]
    keep = [c for c in np.unique(gt) if c > 0 and (gt == c).sum() >= 40]
    folder = tmp_path_factory.mktemp("scenemap")
    scipy.io.savemat(folder / "cube.mat", {"X": cube})
    scipy.io.savemat(folder / "gt.mat", {"gt": np.where(np.isin(gt, keep), gt, 0).astype(np.uint8)})
    return folder


def _cfg(folder, out, model="rf", scene_map=True):
    args = {"n_estimators": 10, "n_jobs": 1} if model == "rf" else {}
    return TrainConfig(
        out=str(out), model=ModelConfig(name=model, args=args),
        data=DataConfig(cube=str(folder / "cube.mat"), labels=str(folder / "gt.mat"), train_fraction=0.2,
                        patch_size=5),
        trainer=TrainerConfig(epochs=1, batch_size=32, seed=0, scene_map=scene_map),
    )


def test_config_yaml_is_written_before_training(crop, tmp_path, monkeypatch):
    seen = {}
    real = hsi_run.HSI_TRAINERS["spectrum"]

    def spy(scene, cfg, out):
        seen["files"] = sorted(p.name for p in out.iterdir())
        return real(scene, cfg, out)

    monkeypatch.setitem(hsi_run.HSI_TRAINERS, "spectrum", spy)
    out = run_hsi(_cfg(crop, tmp_path / "run"))
    assert seen["files"] == ["config.yaml"]
    assert {"metrics.json", "classmap.tif", "preview.png"} <= {p.name for p in out.iterdir()}


def test_no_scene_map_gives_the_same_metrics_without_a_map(crop, tmp_path):
    full = json.loads((run_hsi(_cfg(crop, tmp_path / "full")) / "metrics.json").read_text())
    out = run_hsi(_cfg(crop, tmp_path / "test_only", scene_map=False))
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "metrics.json", "model.pt"]  # no map, no preview
    only = json.loads((out / "metrics.json").read_text())
    assert only["OA"] == full["OA"] and only["confusion_matrix"] == full["confusion_matrix"]


def test_patch_model_classifies_the_test_pixels_alone(crop, tmp_path, monkeypatch):
    calls = []
    real = PatchPredictor.classify_pixels

    def scene_refused(self, scene):
        raise AssertionError("the whole scene was classified")

    def counted(self, scene, rows, cols):
        calls.append(len(rows))
        return real(self, scene, rows, cols)

    monkeypatch.setattr(PatchPredictor, "predict_scene", scene_refused)
    monkeypatch.setattr(PatchPredictor, "classify_pixels", counted)
    out = run_hsi(_cfg(crop, tmp_path / "patch", model="test-scenemap-net", scene_map=False))
    metrics = json.loads((out / "metrics.json").read_text())
    assert calls == [metrics["num_samples"]] and 0 < calls[0] < 40 * 145
    assert not (out / "classmap.tif").exists() and (out / "model.pt").is_file()


def test_cli_no_scene_map_flag(crop, tmp_path, capsys):
    rc = main(["train", "--model", "rf", "--cube", str(crop / "cube.mat"), "--labels", str(crop / "gt.mat"),
               "--set", "model.args={n_estimators: 5, n_jobs: 1}", "--no-scene-map", "--out", str(tmp_path / "r")])
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["config.yaml", "metrics.json", "model.pt"]
