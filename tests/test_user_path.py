"""The user path on real pixels: own GeoTIFF scene + polygons in another CRS → train → predict → export → QGIS.

The scene is a 40×40 crop of the embedded Indian Pines cube written as a GeoTIFF in an **assumed**
georeference (UTM 16N, 20 m pixels; see ``tests/scenes.py``). Training polygons are the DASE training
mask digitised (polygonised) and saved in EPSG:4326 with class *names*; validation polygons are the
ground truth of the crop. Every step runs the command line as a user types it (``python -m geolesf``).
The QGIS part runs headless PyQGIS under ``/usr/bin/python3``; without PyQGIS it is skipped, unless
``GEOLESF_REQUIRE_QGIS=1`` (``.ci/run``) makes that a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests import scenes

ROOT = Path(__file__).resolve().parents[1]
ROWS, COLS = slice(40, 80), slice(8, 48)
TINY = ["--epochs", "2", "--patch-size", "5", "--batch-size", "128", "--set", "data.pca=30",
        "--set", "model.args={dims: 16, d_state: 4, dropout: 0.0}", "--set", "trainer.num_threads=2"]


def geolesf(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "geolesf", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"geolesf {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def user_path(tmp_path_factory) -> Path:
    """Scene, polygons, run folder, map and GeoPackage, made as a user would."""
    work = tmp_path_factory.mktemp("user_path")
    scenes.write_scene(work / "scene.tif", ROWS, COLS)
    gt = scenes.ground_truth()
    train_ids = np.where(gt > 0, scenes.dase_mask(), 0)[ROWS, COLS]
    names = scenes.class_names()
    affine = scenes.transform(ROWS.start, COLS.start)
    scenes.polygons(train_ids, affine, names=names).to_file(work / "polygons.gpkg")
    scenes.polygons(gt[ROWS, COLS], affine, names=names).to_file(work / "validation.gpkg")
    geolesf("train", "--model", "s2mamba", "--cube", "scene.tif", "--labels", "polygons.gpkg",
            "--label-field", "class", "--test-labels", "validation.gpkg", "--out", "run", *TINY, cwd=work)
    geolesf("predict", "scene.tif", "--checkpoint", "run/model.pt", "--out", "map.tif", cwd=work)
    geolesf("export", "map.tif", "--gpkg", "map.gpkg", cwd=work)
    return work


def test_training_used_the_polygons(user_path):
    m = json.loads((user_path / "run" / "metrics.json").read_text())
    full = scenes.ground_truth()
    gt = full[ROWS, COLS]
    train_ids = np.where(full > 0, scenes.dase_mask(), 0)[ROWS, COLS]
    vec = m["data"]["labels"]["vector"]
    assert vec["reprojected_from"] == "EPSG:4326" and vec["reprojected_to"] == "EPSG:32616"
    assert vec["field_kind"] == "names" and vec["overlap_pixels"] == 0 and vec["outside_scene"] == 0
    # The polygons burn back exactly onto the digitised pixels: same count per class name.
    names = scenes.class_names()
    expected = {names[c]: int(n) for c, n in zip(*np.unique(train_ids[train_ids > 0], return_counts=True))}
    burnt = {vec["names"][k]: n for k, n in vec["pixels_per_class"].items()}
    assert burnt == expected
    assert sorted(m["class_names"]) == sorted(expected)
    split = m["split"]
    assert split["name"] == "labels" and split["train_pixels"] == int((train_ids > 0).sum())
    # Validation = ground truth of the crop minus the training pixels (kept for training).
    assert split["test_pixels"] == int((gt > 0).sum() - (train_ids > 0).sum())
    assert split["params"]["pixels_in_both"] == int((train_ids > 0).sum())
    assert split["leakage"]["test_pixels_in_train"] == 0
    assert m["kappa"] > 0.0, "two epochs should already beat chance agreement"


def test_map_and_polygons_share_the_scene_grid(user_path):
    import geopandas as gpd
    import rasterio

    with rasterio.open(user_path / "scene.tif") as scene, rasterio.open(user_path / "map.tif") as cmap:
        assert cmap.crs == scene.crs and cmap.transform == scene.transform and cmap.shape == scene.shape
        bounds = cmap.bounds
    out = gpd.read_file(user_path / "map.gpkg", layer="map")
    assert out.crs.to_epsg() == 32616
    assert np.allclose(out.total_bounds, [bounds.left, bounds.bottom, bounds.right, bounds.top])
    train = gpd.read_file(user_path / "polygons.gpkg").to_crs(out.crs)
    assert out.union_all().contains(train.union_all().buffer(-1.0))


def _pyqgis_missing() -> str:
    if not Path("/usr/bin/python3").is_file():
        return "/usr/bin/python3 not found"
    done = subprocess.run(["/usr/bin/python3", "-c", "import qgis.core"], capture_output=True, text=True)
    return "" if done.returncode == 0 else "PyQGIS not importable under /usr/bin/python3 (apt-get install python3-qgis)"


def test_result_opens_styled_in_qgis(user_path):
    missing = _pyqgis_missing()
    if missing and os.environ.get("GEOLESF_REQUIRE_QGIS", "") not in ("", "0"):
        pytest.fail(f"GEOLESF_REQUIRE_QGIS is set but {missing}")
    if missing:
        pytest.skip(missing)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run(["/usr/bin/python3", str(ROOT / "tests" / "qgis_check.py"), "map.tif", "map.gpkg",
                           "polygons.gpkg"], cwd=user_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    raster, vector, polygons = json.loads(done.stdout)["layers"]
    assert raster["valid"] and vector["valid"] and polygons["valid"]
    m = json.loads((user_path / "run" / "metrics.json").read_text())
    legend = dict(zip(m["class_ids"], m["class_names"]))
    assert raster["renderer"] == "paletted" and raster["crs"] == "EPSG:32616"
    assert {c["value"]: c["label"] for c in raster["classes"]} == legend
    assert vector["renderer"] == "categorizedSymbol" and vector["style_message"] == "Loaded from Provider"
    assert vector["crs"] == raster["crs"]
    shown = {int(c["value"]): c["label"] for c in vector["classes"] if c["value"] not in (None, "")}
    assert set(shown.items()) <= set(legend.items())
    # Same colour for a class in the raster legend and in the polygon layer.
    raster_colours = {c["value"]: c["color"] for c in raster["classes"]}
    assert all(raster_colours[int(c["value"])] == c["color"] for c in vector["classes"] if c["value"] not in (None, ""))
    pixel = raster["pixel_size"][0]
    assert np.allclose(vector["extent"], raster["extent"], atol=pixel)
    # The training polygons (EPSG:4326) land on the raster when QGIS reprojects them.
    xmin, ymin, xmax, ymax = polygons["extent_in_first_crs"]
    rx0, ry0, rx1, ry1 = raster["extent"]
    assert polygons["crs"] == "EPSG:4326"
    assert xmin >= rx0 - pixel and ymin >= ry0 - pixel and xmax <= rx1 + pixel and ymax <= ry1 + pixel
