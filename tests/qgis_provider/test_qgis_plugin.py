"""The QGIS plugin in real QGIS: built by the CLI, installed from the zip, run through Processing.

One headless QGIS process (``tests/qgis_provider/provider_check.py`` under Debian's ``/usr/bin/python3``, where
PyQGIS imports) loads the plugin from the zip ``geolesf qgis-plugin`` built, lists its algorithms, and
runs classify (shipped checkpoint ``s2mamba:indian_pines_dase`` on a 40×40 crop of the Indian Pines
cube written as a GeoTIFF in the assumed UTM georeference of ``tests/scenes.py``), export, train (random
forest from polygons digitised from the DASE training mask), classify with a unet checkpoint file and
pseudo-label (the RGB Landsat sample), a bad input and a cancelled classify; the checks here read its JSON report. Without PyQGIS the tests skip with a
reason, unless ``GEOLESF_REQUIRE_QGIS=1`` (``.ci/run``) makes that a failure.

The provider runs the geolesf executable of this test's environment (``tests/qgis_provider/executable.py``),
passed through the provider's setting.
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
from tests.checkpoints import seeded_unet_checkpoint
from tests.qgis_provider.executable import wrapper

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = "s2mamba:indian_pines_dase"
BAD_SCENE = ROOT / "geolesf" / "embedded" / "landsat7" / "RGB.byte.tif"
ROWS, COLS = slice(40, 80), slice(8, 48)


def _pyqgis_missing() -> str:
    if not Path("/usr/bin/python3").is_file():
        return "/usr/bin/python3 not found"
    done = subprocess.run(["/usr/bin/python3", "-c", "import qgis.core"], capture_output=True, text=True)
    return "" if done.returncode == 0 else "PyQGIS not importable under /usr/bin/python3 (apt-get install python3-qgis)"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "geolesf", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    missing = _pyqgis_missing()
    if missing and os.environ.get("GEOLESF_REQUIRE_QGIS", "") not in ("", "0"):
        pytest.fail(f"GEOLESF_REQUIRE_QGIS is set but {missing}")
    if missing:
        pytest.skip(missing)
    work = tmp_path_factory.mktemp("qgis_plugin")
    built = _cli("qgis-plugin", "--out", "geolesf_qgis.zip", cwd=work)
    assert built.returncode == 0, built.stderr
    scene = scenes.write_scene(work / "scene.tif", ROWS, COLS)
    gt = scenes.ground_truth()
    train_ids = np.where(gt > 0, scenes.dase_mask(), 0)[ROWS, COLS]
    affine = scenes.transform(ROWS.start, COLS.start)
    scenes.polygons(train_ids, affine, names=scenes.class_names()).to_file(work / "polygons.gpkg")
    unet = seeded_unet_checkpoint(work / "unet.pt")
    cfg = {"unet_checkpoint": str(unet), "zip": str(work / "geolesf_qgis.zip"), "executable": str(wrapper(work)), "work": str(work / "qgis"),
           "scene": str(scene), "polygons": str(work / "polygons.gpkg"), "checkpoint": CHECKPOINT,
           "bad_scene": str(BAD_SCENE)}
    (work / "qgis").mkdir()
    (work / "cfg.json").write_text(json.dumps(cfg))
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    env.pop("PYTHONPATH", None)
    # geolesf's bars redraw on every step (the runner otherwise asks for at most two redraws a second, and a
    # fast machine finishes the scene within one), so the progress the test reads does not depend on speed
    env["TQDM_MININTERVAL"] = "0"
    done = subprocess.run(["/usr/bin/python3", str(ROOT / "tests" / "qgis_provider" / "provider_check.py"),
                           str(work / "cfg.json")], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    for name in ("run", "train", "checkpoint_file", "bad_input", "cancel"):
        assert "crashed" not in out[name], out[name].get("traceback")
    return {**out, "work": work}


def test_the_plugin_installs_from_the_zip(report):
    plugin = report["plugin"]
    assert plugin["available"] and plugin["loaded"]
    assert plugin["module"].startswith(str(report["work"] / "qgis" / "plugins"))
    assert plugin["metadata"]["hasProcessingProvider"] == "yes" and plugin["metadata"]["qgisMinimumVersion"] == "3.22"
    from geolesf import __version__

    assert plugin["metadata"]["version"] == __version__
    assert plugin["algorithms"] == ["geolesf:classify", "geolesf:export_gpkg", "geolesf:pseudo_label", "geolesf:train"]


def test_classify_adds_the_styled_class_map(report):
    run = report["run"]["classify"]
    assert run["errors"] == [] and run["result"]["OUTPUT"].endswith("map.tif")
    assert run["progress"] and run["progress"][-1] == 100.0  # geolesf's tqdm bar relayed to QGIS
    assert any(line.startswith("wrote ") and line.endswith("map.qml") for line in run["infos"])
    (layer,) = run["project_layers"]  # added to the project by runAndLoadResults, styled by the provider
    assert layer["valid"] and layer["crs"] == scenes.CRS and layer["renderer"] == "paletted"
    assert {c["value"]: c["label"] for c in layer["classes"]} == scenes.class_names()
    t = scenes.transform(ROWS.start, COLS.start)
    size = scenes.PIXEL * 40
    assert layer["extent"] == pytest.approx([t.c, t.f - size, t.c + size, t.f])
    assert report["run"]["map_file"]["classes"] == layer["classes"]  # the .qml sidecar, as QGIS opens the file


def test_export_writes_polygons_on_the_raster(report):
    export = report["run"]["export"]
    vector, raster = export["layer"], report["run"]["map_file"]
    assert export["errors"] == [] and vector["valid"] and vector["features"] > 0
    # added to the project with the GeoPackage's default style (runAndLoadResults + the provider's styler)
    assert export["project_layers"] == [{"renderer": "categorizedSymbol", "attribute": "class_id"}]
    assert vector["crs"] == raster["crs"] == scenes.CRS
    assert vector["style_loaded"] and vector["style_message"] == "Loaded from Provider"
    assert vector["renderer"] == "categorizedSymbol" and vector["attribute"] == "class_id"
    legend = {c["value"]: c["label"] for c in raster["classes"]}
    shown = {int(c["value"]): c["label"] for c in vector["classes"] if c["value"] not in (None, "")}
    assert shown and set(shown.items()) <= set(legend.items())
    assert {"class_id", "class_name", "area_m2"} <= set(vector["fields"])
    # The polygons tile the raster: same extent, union = the whole 40×40 crop (no nodata pixels).
    assert vector["extent"] == pytest.approx(raster["extent"])
    assert vector["union_area"] == pytest.approx((40 * scenes.PIXEL) ** 2)


def test_train_from_polygons(report):
    train = report["train"]
    assert train["errors"] == []
    run = report["work"] / "qgis" / "run"
    assert train["result"]["CHECKPOINT"] == str(run / "model.pt") and (run / "model.pt").is_file()
    assert {"model.pt", "metrics.json", "config.yaml", "classmap.tif", "classmap.qml"} <= set(train["run_folder"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"]["labels"]["vector"]["reprojected_from"] == "EPSG:4326"  # QGIS layer → geolesf
    (layer,) = train["project_layers"]  # the class map, added to the project styled
    assert layer["crs"] == scenes.CRS and layer["renderer"] == "paletted"
    legend = dict(zip(metrics["class_ids"], metrics["class_names"]))
    assert {c["value"]: c["label"] for c in layer["classes"]} == legend


def test_a_checkpoint_file_and_progress_in_steps(report):
    run = report["checkpoint_file"]["classify"]
    assert run["errors"] == []
    # 791×718 px in 256-px tiles: geolesf's bar moves tile by tile, and QGIS's with it
    assert len(run["progress"]) >= 3 and run["progress"] == sorted(run["progress"]) and run["progress"][-1] == 100.0
    layer = run["layer"]
    assert layer["crs"] == "EPSG:32618" and layer["renderer"] == "paletted"
    assert [c["label"] for c in layer["classes"]] == ["water", "forest", "field", "urban"]


def test_pseudo_label_reports_geolesf_error(report):
    info = report["checkpoint_file"]
    assert info["pseudo_label"].startswith("error: ") and "expected a geolesf-wsss/1 checkpoint" in info["pseudo_label"]
    assert info["pseudo_label_left"] == []


def test_wrong_band_count_is_one_message(report):
    expected = _cli("predict", str(BAD_SCENE), "--checkpoint", CHECKPOINT, "--out", "x.tif", cwd=report["work"])
    line = expected.stderr.strip().splitlines()[-1]
    assert expected.returncode != 0 and line.startswith("error: ") and "3 bands" in line
    bad = report["bad_input"]
    assert bad["raised"] == line  # the algorithm's QgsProcessingException, as processing.run raises it
    assert bad["left"] == []


def test_cancel_leaves_no_output(report):
    cancel = report["cancel"]
    assert cancel["canceled"] and cancel["raised"] == "geolesf run cancelled; its partial outputs were removed"
    assert any(name.endswith(".partial.tif") for name in cancel["seen"])  # cancelled while writing the map
    assert cancel["left"] == []
