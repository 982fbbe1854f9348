"""``task: segmentation``: train unet from the CLI on a real GeoTIFF + vector footprints."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from geolesf.cli.main import main
from geolesf.io.labels import rasterize_labels

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "geolesf" / "configs" / "segmentation" / "unet_spacenet_buildings.yaml"


def test_rasterized_footprints_match_vector_area(shared_data, tmp_path):
    image = shared_data / "spacenet_solaris" / "sample_geotiff.tif"
    vector = shared_data / "spacenet_solaris" / "geotiff_labels.geojson"
    out = rasterize_labels(vector, image, tmp_path / "labels.tif", field_name=None, background=0)
    with rasterio.open(out) as lab, rasterio.open(image) as src:
        assert lab.crs == src.crs and lab.transform == src.transform and lab.shape == src.shape
        burnt = lab.read(1)
        pixel_area = abs(src.transform.a * src.transform.e)
    assert set(np.unique(burnt)) == {0, 1}
    gdf = gpd.read_file(vector).to_crs(src.crs)
    # Footprints are disjoint and inside the scene: burnt area ≈ polygon area (pixel-edge effects only).
    assert burnt.sum() * pixel_area == pytest.approx(gdf.area.sum(), rel=0.05)


def test_train_predict_evaluate_unet_from_cli(shared_data, tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["train", "--config", str(CONFIG), "--out", str(run), "--set", "trainer.epochs=3",
               "--set", "trainer.steps_per_epoch=4", "--set", "trainer.chip=64", "--set", "trainer.batch_size=4",
               "--set", "model.args={base: 4, depth: 2}"])
    assert rc == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    assert metrics["class_ids"] == [0, 1]
    fit = metrics["training_scene_fit"]
    assert 0.0 <= fit["mIoU"] <= 1.0 and set(fit["per_class_IoU"]) == {"background", "building"}
    assert (run / "config.yaml").is_file() and (run / "labels.tif").is_file()

    scene = shared_data / "spacenet_solaris" / "sample_geotiff.tif"
    out = tmp_path / "buildings.tif"
    assert main(["predict", str(scene), "--checkpoint", str(run / "model.pt"), "--out", str(out),
                 "--tile", "256", "--overlap", "32"]) == 0
    with rasterio.open(out) as dst, rasterio.open(scene) as src:
        assert dst.crs == src.crs and dst.transform == src.transform
        assert dst.tags()["model"] == "unet"
    capsys.readouterr()
    rc = main(["evaluate", "--checkpoint", str(run / "model.pt"), "--option", f"image={scene}",
               "--option", f"labels={run / 'labels.tif'}", "--out", str(tmp_path / "ev.json")])
    assert rc == 0
    assert capsys.readouterr().out.startswith("mIoU ")
    ev = json.loads((tmp_path / "ev.json").read_text())
    # Same checkpoint, same scene, same labels, default tiling: equals the fit recorded at training time.
    assert ev["mIoU"] == pytest.approx(fit["mIoU"], abs=1e-9)


def test_segmentation_task_errors_are_one_line(tmp_path, capsys):
    rc = main(["train", "--config", str(CONFIG), "--set", f"data.image={tmp_path / 'missing.tif'}",
               "--out", str(tmp_path / "r")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.tif: file not found" in err[0]
    assert not (tmp_path / "r").exists()
