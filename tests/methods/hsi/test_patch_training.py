"""Patch-model training (Lightning), checkpoints, evaluate and predict on a real Indian Pines crop.

The model here is a tiny conv net registered under task ``hsi-patch`` so that the training
machinery is tested quickly and independently of S²Mamba (which has its own tests).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import scipy.io
import torch
from rasterio.transform import from_origin
from torch import nn

from geolesf.cli.main import main
from geolesf.config import DataConfig, ModelConfig, TrainConfig, TrainerConfig
from geolesf.errors import TrainingError
from geolesf.methods.hsi.checkpoint import load as load_patch_checkpoint
from geolesf.methods.hsi.evaluate import evaluate_checkpoint
from geolesf.methods.hsi.train import run_hsi
from geolesf.predict.patches import PatchGatherer
from geolesf.registry import register_model


class _TinyPatchNet(nn.Module):
    def __init__(self, in_chans: int, num_classes: int, patch_size: int = 5, nan: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, 16, 3, padding=1)
        self.head = nn.Linear(16, num_classes)
        self.nan = nan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(torch.relu(self.conv(x)).mean((2, 3)))
        return out * float("nan") if self.nan else out


@register_model("test-patchnet", method="hsi", kind="pixel")
def _test_patchnet(in_chans: int, num_classes: int, patch_size: int = 5, nan: bool = False) -> nn.Module:
    """A tiny patch classifier used by the training tests."""
    return _TinyPatchNet(in_chans, num_classes, patch_size, nan)


@pytest.fixture(scope="module")
def crop(shared_data, tmp_path_factory):
    """Rows 0..50 of real Indian Pines, 20 bands, as .mat and as a georeferenced GeoTIFF."""
    cube = scipy.io.loadmat(shared_data / "indian_pines" / "IP_200_M.mat")["data_M"][:50, :, ::10]
    gt = scipy.io.loadmat(shared_data / "indian_pines" / "Indian_pines_gt.mat")["indian_pines_gt"][:50]
    keep = [c for c in np.unique(gt) if c > 0 and (gt == c).sum() >= 40]
    gt = np.where(np.isin(gt, keep), gt, 0).astype(np.uint8)
    folder = tmp_path_factory.mktemp("patchcrop")
    scipy.io.savemat(folder / "cube.mat", {"X": cube})
    scipy.io.savemat(folder / "gt.mat", {"gt": gt})
    profile = dict(driver="GTiff", height=cube.shape[0], width=cube.shape[1], count=cube.shape[2],
                   dtype="uint8", crs="EPSG:32616", transform=from_origin(500000, 4500000, 20, 20))
    with rasterio.open(folder / "cube.tif", "w", **profile) as dst:
        dst.write(np.moveaxis(cube, 2, 0))
    return folder, cube, gt


def _cfg(folder, out, epochs=3, **model_args):
    return TrainConfig(
        out=str(out),
        model=ModelConfig(name="test-patchnet", args=model_args),
        data=DataConfig(cube=str(folder / "cube.mat"), labels=str(folder / "gt.mat"), split="random",
                        train_fraction=0.2, patch_size=5, normalize="scene"),
        trainer=TrainerConfig(epochs=epochs, batch_size=32, lr=1e-2, seed=0, eval_every=2),
    )


def test_gather_matches_numpy_slicing():
    rng = np.random.default_rng(0)
    cube = rng.normal(size=(9, 11, 4)).astype(np.float32)
    for padding, mode in (("symmetric", "symmetric"), ("reflect", "reflect"), ("zero", "constant")):
        gather = PatchGatherer(cube, 5, padding)
        padded = np.pad(cube, ((2, 2), (2, 2), (0, 0)), mode=mode)
        rows, cols = np.array([0, 4, 8, 8]), np.array([0, 5, 10, 0])
        got = gather(torch.as_tensor(rows), torch.as_tensor(cols)).numpy()
        for i, (r, c) in enumerate(zip(rows, cols)):
            np.testing.assert_array_equal(got[i], padded[r:r + 5, c:c + 5].transpose(2, 0, 1))


def test_train_writes_run_folder_and_checkpoint(crop, tmp_path):
    folder, cube, gt = crop
    out = run_hsi(_cfg(folder, tmp_path / "run"))
    for name in ("metrics.json", "config.yaml", "classmap.tif", "preview.png", "model.pt", "last.ckpt",
                 "history.json", "curves.png"):
        assert (out / name).is_file(), name
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    # Official schedule: epoch e trains with lr·γ^(e+1).
    assert history[0]["lr"] == pytest.approx(1e-2 * 0.99)
    assert history[2]["lr"] == pytest.approx(1e-2 * 0.99**3)
    assert "test_OA" in history[1]
    payload = torch.load(out / "model.pt", weights_only=True)
    assert payload["model_name"] == "test-patchnet" and payload["patch_size"] == 5
    ckpt = load_patch_checkpoint(out / "model.pt")
    assert ckpt.in_bands == cube.shape[2]
    # normalize: scene (the official recipe) → statistics of every pixel of the cube, as stored
    flat = cube.reshape(-1, cube.shape[2]).astype(np.float64)
    np.testing.assert_allclose(ckpt.band_mean, flat.mean(0), rtol=1e-6)
    np.testing.assert_allclose(ckpt.band_std, flat.std(0), rtol=1e-6)
    assert ckpt.class_ids == [int(c) for c in np.unique(gt) if c > 0]

    # evaluate rebuilds the same split and reproduces the training run's test metrics
    metrics = json.loads((out / "metrics.json").read_text())
    again = evaluate_checkpoint(out / "model.pt")
    assert again["OA"] == pytest.approx(metrics["OA"], abs=1e-12)
    assert again["kappa"] == pytest.approx(metrics["kappa"], abs=1e-12)
    assert (out / "evaluation.json").is_file()


def test_resume_continues_training(crop, tmp_path):
    folder, _, _ = crop
    first = run_hsi(_cfg(folder, tmp_path / "a", epochs=2))
    cfg = _cfg(folder, tmp_path / "b", epochs=4)
    cfg.trainer.resume = str(first / "last.ckpt")
    out = run_hsi(cfg)
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [3, 4]


def test_nan_loss_stops_with_clear_error(crop, tmp_path):
    folder, _, _ = crop
    with pytest.raises(TrainingError, match="training loss became nan at epoch 0"):
        run_hsi(_cfg(folder, tmp_path / "nan", nan=True))


def test_predict_cli_keeps_georeferencing(crop, tmp_path, capsys):
    folder, cube, _ = crop
    run = run_hsi(_cfg(folder, tmp_path / "run", epochs=1))
    out = tmp_path / "map.tif"
    code = main(["predict", str(folder / "cube.tif"), "--model", "test-patchnet",
                 "--checkpoint", str(run / "model.pt"), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    with rasterio.open(folder / "cube.tif") as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs and dst.transform == src.transform
        assert dst.dtypes[0] == "uint8" and dst.colormap(1)
        assert dst.tags()["model"] == "test-patchnet"
        assert len(dst.tags()["weights_sha256"]) == 64
        # the .tif and .mat cubes are the same pixels, so the maps must agree with the run's map
        with rasterio.open(run / "classmap.tif") as ref:
            np.testing.assert_array_equal(dst.read(1), ref.read(1))
    assert out.with_suffix(".png").is_file()


def test_predict_cli_refuses_wrong_band_count(crop, tmp_path, capsys):
    folder, cube, _ = crop
    run = run_hsi(_cfg(folder, tmp_path / "run", epochs=1))
    bad = tmp_path / "bad.mat"
    scipy.io.savemat(bad, {"X": cube[:, :, :7]})
    out = tmp_path / "map.tif"
    capsys.readouterr()  # the training run's progress bars are not the predict command's output
    code = main(["predict", str(bad), "--model", "test-patchnet", "--checkpoint", str(run / "model.pt"),
                 "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ")
    assert "has 7 bands; model test-patchnet expects 20" in err[-1]
    assert not out.exists()


def test_predict_cli_refuses_wrong_model_name(crop, tmp_path, capsys):
    folder, _, _ = crop
    run = run_hsi(_cfg(folder, tmp_path / "run", epochs=1))
    code = main(["predict", str(folder / "cube.mat"), "--model", "rf", "--checkpoint", str(run / "model.pt"),
                 "--out", str(tmp_path / "m.tif")])
    assert code == 2
    assert "holds a 'test-patchnet' model, not 'rf'" in capsys.readouterr().err
