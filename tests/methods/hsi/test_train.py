"""HSI runs end to end on real Indian Pines crops: run folder contents and bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import scipy.io
import yaml
from rasterio.transform import from_origin
from sklearn.metrics import cohen_kappa_score, confusion_matrix

from geolesf import registry
from geolesf.config import DataConfig, ModelConfig, TrainConfig, TrainerConfig
from geolesf.errors import DataError, ModelError
from geolesf.methods.hsi import train as hsi_run
from geolesf.methods.hsi.train import prepare_scene, run_hsi


@pytest.fixture(scope="module")
def crop(shared_data, tmp_path_factory):
    """Rows 0..60 of Indian Pines, 40 bands, saved as .mat; ground truth with ids as-is."""
    cube = scipy.io.loadmat(shared_data / "indian_pines" / "IP_200_M.mat")["data_M"][:60, :, ::5]
    gt = scipy.io.loadmat(shared_data / "indian_pines" / "Indian_pines_gt.mat")["indian_pines_gt"][:60]
    keep = [c for c in np.unique(gt) if c > 0 and (gt == c).sum() >= 30]
    gt = np.where(np.isin(gt, keep), gt, 0).astype(np.uint8)
    folder = tmp_path_factory.mktemp("crop")
    scipy.io.savemat(folder / "cube.mat", {"X": cube})
    scipy.io.savemat(folder / "gt.mat", {"gt": gt})
    return folder, cube, gt


def _cfg(folder, out, **data):
    return TrainConfig(
        out=str(out),
        model=ModelConfig(name="rf", args={"n_estimators": 15, "n_jobs": 1}),
        data=DataConfig(cube=str(folder / "cube.mat"), labels=str(folder / "gt.mat"),
                        class_names={2: "Corn-notill"}, **data),
        trainer=TrainerConfig(seed=0),
    )


def test_run_folder(crop, tmp_path, capsys):
    folder, cube, gt = crop
    out = run_hsi(_cfg(folder, tmp_path / "run", split="random", train_fraction=0.2))
    m = json.loads((out / "metrics.json").read_text())
    ids = [c for c in np.unique(gt) if c > 0]
    assert m["class_ids"] == [int(c) for c in ids]
    assert m["per_class"][0]["name"] == ("Corn-notill" if ids[0] == 2 else f"class_{ids[0]}")
    assert set(m["per_class"][0]) >= {"accuracy", "precision", "recall", "F1", "IoU", "support"}
    assert m["split"]["name"] == "random" and m["split"]["leakage"]["patch_size"] == 7
    assert m["split"]["leakage"]["test_pixels_in_train"] == 0
    assert sum(m["split"]["counts"]["test"].values()) == m["num_samples"]
    assert m["data"]["cube"]["path"].endswith("cube.mat") and len(m["data"]["cube"]["sha256"]) == 64
    assert 0.5 < m["OA"] <= 1.0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["model"]["name"] == "rf" and cfg["data"]["train_fraction"] == 0.2
    with rasterio.open(out / "classmap.tif") as src:
        cmap = src.read(1)
        assert cmap.shape == gt.shape and src.colormap(1)
    assert set(np.unique(cmap)) <= {int(c) for c in ids}  # original ids, every pixel predicted
    # the metrics are those of the written class map on the test pixels, computed here independently
    test = prepare_scene(_cfg(folder, tmp_path / "unused", split="random", train_fraction=0.2)).split.test
    truth, pred = gt[test].astype(int), cmap[test].astype(int)
    recalls = [float(np.mean(pred[truth == c] == c)) for c in ids]
    precisions = [float(np.mean(truth[pred == c] == c)) if (pred == c).any() else 0.0 for c in ids]
    assert m["num_samples"] == int(test.sum())
    assert m["OA"] == pytest.approx(float(np.mean(pred == truth)), abs=1e-12)
    assert m["AA"] == pytest.approx(float(np.mean(recalls)), abs=1e-12)
    assert m["kappa"] == pytest.approx(cohen_kappa_score(truth, pred), abs=1e-9)
    assert [pc["recall"] for pc in m["per_class"]] == pytest.approx(recalls, abs=1e-12)
    assert [pc["precision"] for pc in m["per_class"]] == pytest.approx(precisions, abs=1e-12)
    assert [pc["support"] for pc in m["per_class"]] == [int((truth == c).sum()) for c in ids]
    assert np.array_equal(np.asarray(m["confusion_matrix"]), confusion_matrix(truth, pred, labels=ids))
    iou = [np.sum((pred == c) & (truth == c)) / np.sum((pred == c) | (truth == c)) for c in ids]
    assert m["macro_IoU"] == pytest.approx(float(np.mean(iou)), abs=1e-12)
    assert (out / "preview.png").stat().st_size > 1000
    assert "OA" in capsys.readouterr().out


def test_multi_seed_summary_and_georef(crop, tmp_path):
    folder, cube, gt = crop
    # A GeoTIFF cube with a declared CRS: the class map must carry it.
    tif = folder / "cube_geo.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=cube.shape[1], height=cube.shape[0],
                       count=cube.shape[2], dtype="uint8", crs="EPSG:32616",
                       transform=from_origin(500000, 4500000, 20, 20)) as dst:
        dst.write(cube.transpose(2, 0, 1))
    cfg = _cfg(folder, tmp_path / "multi", split="disjoint", block_size=10, train_fraction=0.2,
               mask_unlabelled=True)
    cfg.data.cube = str(tif)
    cfg.trainer.seeds = [0, 1]
    out = run_hsi(cfg)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and len(summary["OA"]["values"]) == 2
    assert summary["OA"]["mean"] == pytest.approx(np.mean(summary["OA"]["values"]))
    for s in (0, 1):
        m = json.loads((out / f"seed_{s}" / "metrics.json").read_text())
        assert m["split"]["leakage"]["test_patches_with_train_pixels"] == 0
        assert m["seed"] == s
    with rasterio.open(out / "seed_0" / "classmap.tif") as src:
        assert src.crs.to_epsg() == 32616 and src.transform.a == 20
        assert np.all(src.read(1)[gt == 0] == 0)  # mask_unlabelled


def test_label_shape_mismatch(crop, tmp_path):
    folder, _, gt = crop
    scipy.io.savemat(folder / "gt_small.mat", {"gt": gt[:50]})
    cfg = _cfg(folder, tmp_path / "bad")
    cfg.data.labels = str(folder / "gt_small.mat")
    with pytest.raises(DataError, match=r"gt_small.mat:gt have shape \(50, 145\) but cube .*cube.mat:X is 60×145") as err:
        prepare_scene(cfg)
    assert "\n" not in str(err.value)


def test_non_consecutive_ids(crop):
    folder, _, gt = crop
    cfg = _cfg(folder, "unused", split="count", per_class=5)
    scene = prepare_scene(cfg)
    assert scene.class_ids == [int(c) for c in np.unique(gt) if c > 0]
    assert scene.y.max() == scene.num_classes - 1 and scene.y.min() == -1
    assert scene.features.dtype == np.float32
    cfg.data.pca = 5
    assert prepare_scene(cfg).num_features == 5


def _scene_with_cube(crop, tmp_path, name, cube, **data):
    folder, _, _ = crop
    path = tmp_path / f"{name}.mat"
    scipy.io.savemat(path, {"X": cube.astype(np.float32)})
    cfg = _cfg(folder, "unused", split="random", train_fraction=0.2, **data)
    cfg.data.cube = str(path)
    return prepare_scene(cfg)


def _fitted(scene):
    """Everything fitted on data: band mean/std and, with PCA, its components and mean."""
    out = {"mean": scene.normalizer.mean, "std": scene.normalizer.std}
    if scene.pca is not None:
        out |= {"pca_components": scene.pca._pca.components_, "pca_mean": scene.pca._pca.mean_}
    return out


@pytest.mark.parametrize("pca", [None, 5], ids=["zscore", "zscore+pca"])
def test_statistics_are_fitted_on_train_pixels_only(crop, tmp_path, pca):
    """Changing every non-training pixel (test pixels +1000, unlabelled +500) must not move any
    fitted statistic; changing the training pixels must (so the comparison can fail)."""
    _, cube, _ = crop
    cube = cube.astype(np.float64)
    base = _scene_with_cube(crop, tmp_path, "base", cube, pca=pca)
    train, test = base.split.train, base.split.test
    assert train.sum() > 100 and test.sum() > 100 and not (train & test).any()

    moved = cube.copy()
    moved[test] += 1000.0
    moved[~train & ~test] += 500.0
    other = _scene_with_cube(crop, tmp_path, "test_moved", moved, pca=pca)
    assert np.array_equal(other.split.train, train) and np.array_equal(other.split.test, test)
    for key, value in _fitted(base).items():
        assert np.array_equal(_fitted(other)[key], value), f"{key} moved when only non-training pixels changed"
    assert np.array_equal(other.features[train], base.features[train])
    # the z-score itself, computed here from the training pixels of the raw cube
    np.testing.assert_allclose(base.normalizer.mean, cube[train].mean(0), rtol=1e-12)
    np.testing.assert_allclose(base.normalizer.std, cube[train].std(0), rtol=1e-12)

    # a per-band shift of *all* training pixels is absorbed by the z-score before PCA, so move half of them
    rows, cols = np.nonzero(train)
    half = np.zeros_like(train)
    half[rows[::2], cols[::2]] = True
    moved_train = cube.copy()
    moved_train[half] += 1000.0
    third = _scene_with_cube(crop, tmp_path, "train_moved", moved_train, pca=pca)
    np.testing.assert_allclose(_fitted(third)["mean"], _fitted(base)["mean"] + 1000.0 * half.sum() / train.sum(),
                               rtol=1e-9)
    if pca:
        assert not np.allclose(np.abs(_fitted(third)["pca_components"]), np.abs(_fitted(base)["pca_components"]),
                               atol=1e-2)


def test_scene_normalisation_uses_every_pixel(crop, tmp_path):
    """``normalize: scene`` is the official S²Mamba recipe (methods.md §2.1): all pixels count."""
    _, cube, _ = crop
    cube = cube.astype(np.float64)
    scene = _scene_with_cube(crop, tmp_path, "scene", cube, normalize="scene")
    np.testing.assert_allclose(scene.normalizer.mean, cube.reshape(-1, cube.shape[2]).mean(0), rtol=1e-12)


def test_unknown_task_and_pluggable_trainer(crop, tmp_path, monkeypatch):
    folder, _, _ = crop

    entry = registry.ModelEntry(name="dummy-hsi", fn=lambda **kw: None, method="hsi", kind="hsi-test", description="")
    monkeypatch.setitem(registry._REGISTRY, "dummy-hsi", entry)

    cfg = _cfg(folder, tmp_path / "d")
    cfg.model.name = "dummy-hsi"
    with pytest.raises(ModelError, match="kind .hsi-test.; no HSI trainer"):
        run_hsi(cfg)

    class Majority:
        def predict_scene(self, scene):
            return np.zeros(scene.shape, dtype=np.int64)

    monkeypatch.setitem(hsi_run.HSI_TRAINERS, "hsi-test", lambda scene, cfg, out: Majority())
    m = json.loads((run_hsi(cfg) / "metrics.json").read_text())
    assert m["model"]["kind"] == "hsi-test" and m["per_class"][0]["recall"] == 1.0
