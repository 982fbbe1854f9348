"""``data.drop_bands`` end to end: train on a georeferenced ENVI cube with wavelengths, drop the water
bands, and predict with the checkpoint — the same selection is applied to the scene automatically."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import scipy.io

from geolesf.cli.main import main
from geolesf.config import DataConfig, ModelConfig, TrainConfig, TrainerConfig
from geolesf.io.bands import WATER_WINDOWS
from geolesf.methods.hsi.checkpoint import load as load_patch_checkpoint
from geolesf.methods.hsi.train import run_hsi
from tests.checkpoints import register_tiny_patch_net

WAVELENGTHS = [round(float(w), 3) for w in np.linspace(400.0, 2500.0, 40)]


register_tiny_patch_net("test-bandnet")


@pytest.fixture(scope="module")
def scene(shared_data, tmp_path_factory):
    """Rows 0..40 of real Indian Pines, 40 bands, as an ENVI cube with map info and wavelengths,
    the same pixels as a GeoTIFF, and the ground truth."""
    cube = scipy.io.loadmat(shared_data / "indian_pines" / "IP_200_M.mat")["data_M"][:40, :, ::5]
    gt = scipy.io.loadmat(shared_data / "indian_pines" / "Indian_pines_gt.mat")["indian_pines_gt"][:40]
    keep = [c for c in np.unique(gt) if c > 0 and (gt == c).sum() >= 40]
    gt = np.where(np.isin(gt, keep), gt, 0).astype(np.uint8)
    folder = tmp_path_factory.mktemp("dropbands")
    lines, samples, bands = cube.shape
    (folder / "cube.img").write_bytes(np.ascontiguousarray(cube.transpose(2, 0, 1)).tobytes())
    (folder / "cube.hdr").write_text(
        "ENVI\n" f"samples = {samples}\nlines = {lines}\nbands = {bands}\nheader offset = 0\n"
        "file type = ENVI Standard\ndata type = 1\ninterleave = bsq\nbyte order = 0\n"
        "map info = {UTM, 1.000, 1.000, 509000.000, 4483000.000, 20.000, 20.000, 16, North, WGS-84, units=Meters}\n"
        "wavelength units = Nanometers\nwavelength = {" + ", ".join(map(str, WAVELENGTHS)) + "}\n")
    scipy.io.savemat(folder / "gt.mat", {"gt": gt})
    with rasterio.open(folder / "cube.img") as src:  # GDAL reads the map info
        profile = dict(driver="GTiff", height=lines, width=samples, count=bands, dtype="uint8", crs=src.crs,
                       transform=src.transform)
    with rasterio.open(folder / "cube.tif", "w", **profile) as dst:
        dst.write(np.moveaxis(cube, 2, 0))
    return folder, cube


def test_train_and_predict_with_water_bands_dropped(scene, tmp_path, capsys):
    folder, cube = scene
    cfg = TrainConfig(
        out=str(tmp_path / "run"), model=ModelConfig(name="test-bandnet"),
        data=DataConfig(cube=str(folder / "cube.hdr"), labels=str(folder / "gt.mat"), split="random",
                        train_fraction=0.2, patch_size=3, normalize="scene", drop_bands=["water"]),
        trainer=TrainerConfig(epochs=1, batch_size=64, lr=1e-2, seed=0),
    )
    run = run_hsi(cfg)
    expect = [i for i, w in enumerate(WAVELENGTHS) if not any(lo <= w <= hi for lo, hi in WATER_WINDOWS)]
    assert 30 < len(expect) < 40
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"]["bands"]["keep"] == expect
    assert metrics["data"]["bands"]["wavelengths_kept"] == [WAVELENGTHS[i] for i in expect]
    assert metrics["data"]["cube"]["crs"] == "EPSG:32616"  # from the ENVI map info
    ckpt = load_patch_checkpoint(run / "model.pt")
    assert ckpt.in_bands == len(expect) and ckpt.scene_bands == 40
    with rasterio.open(run / "classmap.tif") as ref:
        run_map = ref.read(1)
        assert ref.crs.to_epsg() == 32616 and ref.transform.c == 509000.0
        assert ref.tags()["input_wavelengths_nm"].split(",") == [f"{WAVELENGTHS[i]:g}" for i in expect]

    for scene_path in ("cube.hdr", "cube.tif"):  # whole-cube path and tiled path
        out = tmp_path / f"map_{scene_path}.tif"
        code = main(["predict", str(folder / scene_path), "--checkpoint", str(run / "model.pt"), "--out", str(out)])
        assert code == 0, capsys.readouterr().err
        with rasterio.open(out) as dst:
            np.testing.assert_array_equal(dst.read(1), run_map)

    bad = tmp_path / "bad.mat"
    scipy.io.savemat(bad, {"X": cube[:, :, :len(expect)]})
    capsys.readouterr()
    code = main(["predict", str(bad), "--checkpoint", str(run / "model.pt"), "--out", str(tmp_path / "bad.tif")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and f"has {len(expect)} bands; model test-bandnet expects 40" in err[-1]
    assert not (tmp_path / "bad.tif").exists()


def test_train_and_predict_on_an_enmap_product_folder(shared_data, tmp_path, capsys):
    """A product folder as --cube and as the predict scene: reflectance, CRS, masks and band selection."""
    from tests.io import sensor_fixtures as fx

    want = fx.enmap(tmp_path / "product")
    gt = scipy.io.loadmat(shared_data / "indian_pines" / "Indian_pines_gt.mat")["indian_pines_gt"]
    gt = gt[40:40 + fx.ROWS, 60:60 + fx.COLS]  # the ground truth of the fixture's pixels: classes 2, 10 (and
    gt = np.where(np.isin(gt, [2, 10]), gt, 0).astype(np.uint8)  # one pixel of 11, left out); 6 px are masked
    scipy.io.savemat(tmp_path / "gt.mat", {"gt": gt})
    cfg = TrainConfig(
        out=str(tmp_path / "run"), model=ModelConfig(name="test-bandnet"),
        data=DataConfig(cube=str(want["xml"].parent), labels=str(tmp_path / "gt.mat"), split="random",
                        train_fraction=0.5, patch_size=3, normalize="scene", drop_bands=["water", [2450, 2600]]),
        trainer=TrainerConfig(epochs=1, batch_size=64, lr=1e-2, seed=0),
    )
    with pytest.warns(UserWarning, match="labelled pixels are nodata or flagged"):
        run = run_hsi(cfg)
    metrics = json.loads((run / "metrics.json").read_text())
    cube_info = metrics["data"]["cube"]
    assert cube_info["sensor"] == "EnMAP L2A" and cube_info["acquired"] == want["acquired"]
    assert cube_info["quality"]["invalid_pixels"] == int(want["invalid"].sum())
    kept = metrics["data"]["bands"]["wavelengths_kept"]
    assert max(kept) < 2450 and not any(lo <= w <= hi for w in kept for lo, hi in WATER_WINDOWS)
    out = tmp_path / "map.tif"
    capsys.readouterr()
    code = main(["predict", str(want["xml"].parent), "--checkpoint", str(run / "model.pt"), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    with rasterio.open(out) as dst:
        assert dst.crs.to_epsg() == 32633 and dst.transform == want["transform"]
        pred = dst.read(1)
        assert (pred[want["invalid"]] == 0).all() and (pred[~want["invalid"]] > 0).all()
        assert len(dst.tags()["input_wavelengths_nm"].split(",")) == len(kept)
