"""``geolesf predict`` creates a missing output folder, leaves none behind when it fails, and takes a
catalog dataset name as its scene."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import scipy.io

from geolesf.cli.main import main
from geolesf.paths import embedded_data_root

CKPT = "s2mamba:indian_pines_dase"


@pytest.fixture(scope="module")
def strip(tmp_path_factory):
    """Rows 0..12 of the embedded Indian Pines cube (all 200 bands) and a 20-band copy."""
    cube = scipy.io.loadmat(embedded_data_root() / "indian_pines" / "IP_200_M.mat")["data_M"][:12]
    folder = tmp_path_factory.mktemp("strip")
    scipy.io.savemat(folder / "strip.mat", {"X": cube})
    scipy.io.savemat(folder / "bands20.mat", {"X": cube[:, :, ::10]})
    return folder


def test_predict_creates_the_output_folder(strip, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["predict", str(strip / "strip.mat"), "--checkpoint", CKPT, "--out", "new/sub/map.tif"]) == 0
    with rasterio.open(tmp_path / "new" / "sub" / "map.tif") as src:
        assert (src.height, src.width) == (12, 145)
        assert set(np.unique(src.read(1))) <= set(range(1, 17))
    assert (tmp_path / "new" / "sub" / "map.png").is_file()


def test_a_failed_predict_leaves_no_new_folder(strip, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # fails before the model runs: no such checkpoint
    assert main(["predict", str(strip / "strip.mat"), "--checkpoint", "missing.pt", "--out", "a/b/map.tif"]) == 2
    # fails after the folder was made: the checkpoint wants 200 bands, the cube has 20
    assert main(["predict", str(strip / "bands20.mat"), "--checkpoint", CKPT, "--out", "c/d/map.tif"]) == 2
    err = capsys.readouterr().err
    assert "200" in err and "20" in err
    assert list(tmp_path.iterdir()) == []


def test_predict_takes_a_dataset_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GEOLESF_HOME", str(tmp_path / "home"))
    assert main(["predict", "IP_200_M.mat", "--checkpoint", CKPT, "--out", "map.tif"]) == 2
    assert "use --cube indian_pines" not in (err := capsys.readouterr().err) and "'indian_pines'" in err
    assert not (tmp_path / "map.tif").exists()
    assert main(["predict", "landsat7_rgb", "--checkpoint", CKPT, "--out", "out/map.tif"]) == 2
    err = capsys.readouterr().err
    assert "3" in err and "200" in err and not (tmp_path / "out").exists()


def test_export_and_evaluate_create_their_output_folders(strip, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["predict", str(strip / "strip.mat"), "--checkpoint", CKPT, "--out", "map.tif"]) == 0
    assert main(["export", "map.tif", "--gpkg", "vec/sub/map.gpkg"]) == 0
    assert (tmp_path / "vec" / "sub" / "map.gpkg").is_file()
    # a failed export (no such class map) leaves no new folder
    assert main(["export", "missing.tif", "--gpkg", "gone/map.gpkg"]) == 2
    assert not (tmp_path / "gone").exists()
    assert main(["evaluate", "--checkpoint", CKPT, "--out", "eval/sub/metrics.json"]) == 0
    assert (tmp_path / "eval" / "sub" / "metrics.json").is_file()
    assert main(["evaluate", "--checkpoint", "missing.pt", "--out", "gone/metrics.json"]) == 2
    assert not (tmp_path / "gone").exists()
