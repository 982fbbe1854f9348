"""The windowed hsi path (data.windowed) against the in-memory path on a real Indian Pines GeoTIFF.

Row bands are made tiny (``BAND_BYTES`` patched) so that every patch, statistic and prediction
crosses several band boundaries and the scene edges.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import rasterio
import scipy.io
import torch
from rasterio.transform import from_origin

from geolesf.config import DataConfig, ModelConfig, TrainConfig, TrainerConfig
from geolesf.data import windowed as W
from geolesf.errors import ConfigError, DataError
from geolesf.io.hsi import read_cube
from geolesf.methods.hsi.train import prepare_scene, run_hsi
from geolesf.predict.patches import PatchGatherer
from tests.checkpoints import register_tiny_patch_net


register_tiny_patch_net("test-windowed-net")


@pytest.fixture(scope="module")
def scene(shared_data, tmp_path_factory):
    """Rows 0..60 of Indian Pines, 25 bands, int16 DN, as a georeferenced tiled GeoTIFF + label raster."""
    cube = scipy.io.loadmat(shared_data / "indian_pines" / "IP_200_M.mat")["data_M"][:60, :, ::8]
    cube = cube.astype(np.int16) * 30 + 500
    gt = scipy.io.loadmat(shared_data / "indian_pines" / "Indian_pines_gt.mat")["indian_pines_gt"][:60]
    keep = [c for c in np.unique(gt) if c > 0 and (gt == c).sum() >= 40]
    gt = np.where(np.isin(gt, keep), gt, 0).astype(np.uint8)
    folder = tmp_path_factory.mktemp("windowed")
    profile = dict(driver="GTiff", height=cube.shape[0], width=cube.shape[1], count=cube.shape[2], dtype="int16",
                   crs="EPSG:32616", transform=from_origin(500000, 4500000, 20, 20), tiled=True,
                   blockxsize=16, blockysize=16)
    with rasterio.open(folder / "cube.tif", "w", **profile) as dst:
        dst.write(np.moveaxis(cube, 2, 0))
    with rasterio.open(folder / "gt.tif", "w", **{**profile, "count": 1, "dtype": "uint8"}) as dst:
        dst.write(gt[None])
    return folder, cube, gt


@pytest.fixture(autouse=True)
def small_bands(monkeypatch):
    """Row bands of ~5 rows (7 at least for 7×7 patches): many band boundaries on a 60-row scene."""
    monkeypatch.setattr(W, "BAND_BYTES", 145 * 25 * 4 * 5)


def _cfg(folder, out, windowed, model="rf", **data):
    args = {"n_estimators": 10, "n_jobs": 1} if model == "rf" else {}
    data.setdefault("split", "random")
    data.setdefault("train_fraction", 0.2)
    return TrainConfig(
        out=str(out), model=ModelConfig(name=model, args=args),
        data=DataConfig(cube=str(folder / "cube.tif"), labels=str(folder / "gt.tif"), windowed=windowed, **data),
        trainer=TrainerConfig(seed=0, epochs=2, batch_size=32, lr=1e-2),
    )


@pytest.mark.parametrize("normalize, pca", [("train", None), ("scene", None), ("none", None), ("train", 6)])
def test_same_split_statistics_and_features(scene, tmp_path, normalize, pca):
    folder, cube, gt = scene
    mem = prepare_scene(_cfg(folder, tmp_path, False, normalize=normalize, pca=pca))
    win = prepare_scene(_cfg(folder, tmp_path, True, normalize=normalize, pca=pca))
    assert isinstance(win.features, W.FeatureWindows) and win.cube.data is None
    assert np.array_equal(mem.split.train, win.split.train) and np.array_equal(mem.split.test, win.split.test)
    assert np.array_equal(mem.y, win.y) and mem.class_ids == win.class_ids and mem.leakage == win.leakage
    if normalize == "none":
        assert win.normalizer is None and mem.normalizer is None
    else:
        exact = normalize == "train"  # the same pixels in the same order; scene stats are streamed (Chan)
        check = np.array_equal if exact else (lambda a, b: np.allclose(a, b, rtol=1e-12, atol=0))
        assert check(mem.normalizer.mean, win.normalizer.mean) and check(mem.normalizer.std, win.normalizer.std)
        assert win.normalizer.fitted_on == mem.normalizer.fitted_on
    full = win.features.read(0, cube.shape[0])
    assert full.shape == mem.features.shape == win.features.shape
    if pca is None and normalize != "scene":
        assert np.array_equal(full, mem.features)
    else:
        assert np.allclose(full, mem.features, rtol=1e-4, atol=1e-4)
    assert np.allclose(win.spectra("train")[0], mem.spectra("train")[0], rtol=1e-5, atol=1e-5)
    assert win.info["cube"]["shape"] == mem.info["cube"]["shape"] == list(cube.shape)


@pytest.mark.parametrize("padding", ["symmetric", "reflect", "zero"])
def test_patches_equal_whole_cube_gatherer(scene, tmp_path, padding):
    folder, cube, _ = scene
    win = prepare_scene(_cfg(folder, tmp_path, True))
    mem = prepare_scene(_cfg(folder, tmp_path, False))
    h, w = cube.shape[:2]
    rows, cols = np.divmod(np.arange(h * w), w)  # every pixel: edges, corners and band boundaries
    patches = W.WindowedPatches(win.features, 7, padding)
    assert patches.rows_per_band == 7
    ref = PatchGatherer(mem.features, 7, padding)(torch.as_tensor(rows), torch.as_tensor(cols))
    assert torch.equal(patches.gather_all(rows, cols), ref)
    px = win.pixels("train")
    patches.preload(px[:, 0], px[:, 1])
    pick = np.random.default_rng(0).permutation(len(px))[:50]  # shuffled training batch: from the cache
    got = patches(torch.as_tensor(px[pick, 0]), torch.as_tensor(px[pick, 1]))
    assert torch.equal(got, ref[torch.as_tensor(px[pick, 0] * w + px[pick, 1])])
    test = win.pixels("test")[:40]  # not preloaded: read through the bands
    assert torch.equal(patches(torch.as_tensor(test[:, 0]), torch.as_tensor(test[:, 1])),
                       ref[torch.as_tensor(test[:, 0] * w + test[:, 1])])


def _run(cfg):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = run_hsi(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    with rasterio.open(out / "classmap.tif") as src:
        return metrics, src.read(1), src.crs, src.transform


@pytest.mark.parametrize("model", ["rf", "test-windowed-net"])
def test_same_metrics_and_class_map(scene, tmp_path, model):
    folder, cube, _ = scene
    extra = {"patch_size": 5, "normalize": "scene"} if model != "rf" else {}
    m_mem, map_mem, crs, transform = _run(_cfg(folder, tmp_path / "mem", False, model, **extra))
    m_win, map_win, crs_w, transform_w = _run(_cfg(folder, tmp_path / "win", True, model, **extra))
    assert m_win["windowed"] is True and "windowed" not in m_mem
    for key in ("OA", "AA", "kappa", "confusion_matrix", "per_class", "split"):
        assert m_win[key] == m_mem[key], key
    assert np.array_equal(map_mem, map_win) and crs == crs_w and transform == transform_w
    assert (tmp_path / "win" / "preview.png").is_file() and (tmp_path / "win" / "classmap.qml").is_file()


def test_scene_map_false_skips_the_map(scene, tmp_path):
    folder, _, _ = scene
    cfg = _cfg(folder, tmp_path / "run", True)
    cfg.trainer.scene_map = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = run_hsi(cfg)
    assert (out / "metrics.json").is_file() and not (out / "classmap.tif").exists()
    assert "scene_map_seconds" not in json.loads((out / "metrics.json").read_text())["timings"]


def test_auto_follows_the_memory_budget(scene, monkeypatch, tmp_path):
    folder, cube, _ = scene
    data = DataConfig(cube=str(folder / "cube.tif"), labels=str(folder / "gt.tif"))
    need = W.IN_MEMORY_COPIES * cube.size * 4
    monkeypatch.setenv("GEOLESF_MAX_ARRAY_BYTES", str(need))
    assert W.use_windowed(data) is False
    monkeypatch.setenv("GEOLESF_MAX_ARRAY_BYTES", str(need - 1))
    assert W.use_windowed(data) is True
    data.windowed = False
    assert W.use_windowed(data) is False
    data.windowed = "sometimes"
    with pytest.raises(ConfigError, match="data.windowed must be auto, true or false"):
        W.use_windowed(data)
    scipy.io.savemat(tmp_path / "cube.mat", {"X": cube})
    mat = DataConfig(cube=str(tmp_path / "cube.mat"), labels=str(folder / "gt.tif"), windowed=True)
    with pytest.raises(ConfigError, match="not a plain raster .a MATLAB, ENVI or sensor-product cube.; windowed reading needs"):
        W.use_windowed(mat)
    mat.windowed = "auto"
    assert W.use_windowed(mat) is False


def test_budget_below_the_cube(scene, monkeypatch, tmp_path):
    """The in-memory reader refuses a cube over the budget; the windowed run (auto) trains and maps it."""
    folder, cube, _ = scene
    monkeypatch.setenv("GEOLESF_MAX_ARRAY_BYTES", str(cube.nbytes // 2))
    with pytest.raises(DataError, match="over the budget"):
        read_cube(folder / "cube.tif")
    metrics, cmap, _, _ = _run(_cfg(folder, tmp_path / "run", "auto"))
    assert metrics["windowed"] is True and cmap.shape == cube.shape[:2] and 0.3 < metrics["OA"] <= 1.0
    # the training patches are held in memory, so they too are bounded: refused with a clear message
    cfg = _cfg(folder, tmp_path / "deep", "auto", "test-windowed-net", patch_size=5)
    monkeypatch.setenv("GEOLESF_MAX_ARRAY_BYTES", "100000")
    with pytest.raises(DataError, match="training patches .* over the budget"):
        run_hsi(cfg)


def test_mask_unlabelled_is_refused(scene, tmp_path):
    folder, _, _ = scene
    with pytest.raises(ConfigError, match="mask_unlabelled is not available with a windowed scene"):
        prepare_scene(_cfg(folder, tmp_path, True, mask_unlabelled=True))


def test_streamed_scene_statistics_match_numpy(scene):
    folder, cube, _ = scene
    with W.RasterWindows(folder / "cube.tif") as src:
        mean, std = W.scene_band_stats(src)
    flat = cube.reshape(-1, cube.shape[2]).astype(np.float64)
    assert np.allclose(mean, flat.mean(0), rtol=1e-12) and np.allclose(std, flat.std(0), rtol=1e-10)


def test_vector_labels_on_the_cube_grid(scene, tmp_path):
    """Polygons of the ground truth's fields burn back to the same label raster."""
    import geopandas as gpd
    from rasterio.features import shapes
    from shapely.geometry import shape

    from geolesf.data.scene_labels import scene_labels

    folder, _, gt = scene
    with rasterio.open(folder / "gt.tif") as src:
        transform, crs = src.transform, src.crs
    polys = [(shape(g), int(v)) for g, v in shapes(gt, mask=gt > 0, transform=transform)]
    gdf = gpd.GeoDataFrame({"class": [v for _, v in polys]}, geometry=[g for g, _ in polys], crs=crs)
    gdf.to_file(tmp_path / "labels.gpkg", driver="GPKG")
    data = DataConfig(cube=str(folder / "cube.tif"), labels=str(tmp_path / "labels.gpkg"), label_field="class",
                      windowed=True)
    cube = W.open_scene_cube(data)
    assert cube.data is None  # burnt onto the grid of a cube read through windows
    labels = scene_labels(data, cube, seed=0, patch_size=5).ground_truth
    assert np.array_equal(labels.data, gt) and labels.path.endswith("labels.gpkg")
