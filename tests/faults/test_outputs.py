"""Issue 18, families 2 and 3: outputs never destroy inputs, existing outputs need --overwrite, and
two runs to one destination cannot interleave (geolesf.io.atomic: check_outputs, output_lock)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from tests.checkpoints import seeded_unet_checkpoint
from tests.faults.conftest import digest, geolesf

torch = pytest.importorskip("torch")


def _scene(path: Path, driver: str = "GTiff", size: int = 48) -> Path:
    rng = np.random.default_rng(0)
    profile = {"driver": driver, "height": size, "width": size, "count": 3, "dtype": "uint8"}
    if driver == "GTiff":
        profile.update(crs="EPSG:32616", transform=from_origin(500000, 4500000, 30, 30))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(rng.integers(0, 255, (3, size, size), dtype=np.uint8))
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return seeded_unet_checkpoint(tmp_path_factory.mktemp("ckpt") / "unet.pt")


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def _predict(scene: Path, ckpt: Path, out: Path, *extra: str):
    return geolesf("predict", scene, "--checkpoint", ckpt, "--out", out, "--tile", "32", "--overlap", "8", *extra)


def test_preview_png_never_replaces_a_png_scene(tmp_path, ckpt):
    scene = _scene(tmp_path / "scene.png", driver="PNG")
    before = digest(scene)
    run = _predict(scene, ckpt, tmp_path / "scene.tif")
    run.assert_user_error("scene.png", "input scene")
    assert digest(scene) == before
    assert _leftovers(tmp_path, {"scene.png", "scene.png.aux.xml"}) == []
    # --overwrite never makes an input writable; --no-preview makes the command valid.
    _predict(scene, ckpt, tmp_path / "scene.tif", "--overwrite").assert_user_error("input scene")
    assert digest(scene) == before
    ok = _predict(scene, ckpt, tmp_path / "scene.tif", "--no-preview")
    assert ok.code == 0, ok.err
    assert digest(scene) == before


def test_probabilities_equal_to_the_input_are_refused(tmp_path, ckpt):
    scene = _scene(tmp_path / "scene.tif")
    before = digest(scene)
    run = _predict(scene, ckpt, tmp_path / "map.tif", "--probabilities", scene, "--no-preview")
    run.assert_user_error("--probabilities", "input scene")
    assert digest(scene) == before
    assert _leftovers(tmp_path, {"scene.tif"}) == []


def test_out_hard_link_and_symlink_to_the_input_are_refused(tmp_path, ckpt):
    scene = _scene(tmp_path / "scene.tif")
    before = digest(scene)
    os.link(scene, tmp_path / "hard.tif")
    os.symlink(scene, tmp_path / "soft.tif")
    for name in ("hard.tif", "soft.tif"):
        _predict(scene, ckpt, tmp_path / name, "--overwrite", "--no-preview").assert_user_error("input scene")
        _predict(scene, ckpt, tmp_path / "map.tif", "--probabilities", tmp_path / name,
                 "--overwrite", "--no-preview").assert_user_error("--probabilities", "input scene")
    assert digest(scene) == before
    assert _leftovers(tmp_path, {"scene.tif", "hard.tif", "soft.tif"}) == []


def test_pseudo_label_out_equal_to_the_input_is_refused(tmp_path):
    scene = _scene(tmp_path / "scene.tif")
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"not reached")
    before = digest(scene)
    run = geolesf("pseudo-label", scene, "--checkpoint", ckpt, "--out", scene)
    run.assert_user_error("--out", "input scene")
    run = geolesf("pseudo-label", scene, "--checkpoint", ckpt, "--out", scene, "--overwrite")
    run.assert_user_error("--out", "input scene")
    assert digest(scene) == before
    assert _leftovers(tmp_path, {"scene.tif", "model.pt"}) == []


def test_evaluate_out_equal_to_the_checkpoint_is_refused(tmp_path, ckpt):
    model = tmp_path / "model.pt"
    model.write_bytes(ckpt.read_bytes())
    before = digest(model)
    for extra in ((), ("--overwrite",)):
        run = geolesf("evaluate", "--checkpoint", model, "--out", model, "--dataset", "voc2012", *extra)
        run.assert_user_error("--out", "--checkpoint")
    assert digest(model) == before
    assert _leftovers(tmp_path, {"model.pt"}) == []


def test_evaluate_existing_out_needs_overwrite(tmp_path, ckpt):
    report = tmp_path / "report.json"
    report.write_text("{}\n")
    run = geolesf("evaluate", "--checkpoint", ckpt, "--out", report, "--dataset", "voc2012")
    run.assert_user_error("report.json", "--overwrite")
    assert report.read_text() == "{}\n"


def test_existing_outputs_need_overwrite(tmp_path, ckpt):
    scene = _scene(tmp_path / "scene.tif")
    out, probs = tmp_path / "map.tif", tmp_path / "probs.tif"
    first = _predict(scene, ckpt, out, "--probabilities", probs)
    assert first.code == 0, first.err
    sums = {p.name: digest(p) for p in (out, out.with_suffix(".qml"), out.with_suffix(".png"), probs,
                                         probs.with_suffix(".qml"))}
    again = _predict(scene, ckpt, out, "--probabilities", probs)
    again.assert_user_error("map.tif", "--overwrite")
    assert {p.name: digest(tmp_path / p.name) for p in map(Path, sums)} == sums
    # a sidecar alone is enough: the class map is gone, its .qml / .png stay
    out.unlink()
    _predict(scene, ckpt, out, "--probabilities", probs).assert_user_error("--overwrite")
    assert not out.exists()
    probs_only = tmp_path / "other.tif"
    _predict(scene, ckpt, probs_only, "--probabilities", probs, "--no-preview").assert_user_error(
        "--probabilities", "--overwrite")
    ok = _predict(scene, ckpt, out, "--probabilities", probs, "--overwrite")
    assert ok.code == 0, ok.err
    assert digest(out) == sums["map.tif"] and digest(probs) == sums["probs.tif"]
    assert _leftovers(tmp_path, {"scene.tif", *sums}) == []

    # export: --gpkg and its .qml; the class map's own .qml with the same bytes is no conflict
    gpkg = tmp_path / "polys.gpkg"
    first = geolesf("export", out, "--gpkg", gpkg)
    assert first.code == 0, first.err
    before = digest(gpkg)
    geolesf("export", out, "--gpkg", gpkg).assert_user_error("polys.gpkg", "--overwrite")
    assert digest(gpkg) == before
    ok = geolesf("export", out, "--gpkg", gpkg, "--overwrite")
    assert ok.code == 0, ok.err
    os.link(out, tmp_path / "link.gpkg")
    geolesf("export", out, "--gpkg", tmp_path / "link.gpkg", "--overwrite").assert_user_error("class map")
    assert digest(out) == sums["map.tif"]


def test_train_into_a_used_run_folder_needs_overwrite(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "model.pt").write_bytes(b"old weights")
    emb = Path(__file__).resolve().parents[2] / "geolesf" / "embedded" / "indian_pines"
    run = geolesf("train", "--model", "rf", "--cube", emb / "IP_200_M.mat", "--labels", emb / "Indian_pines_gt.mat",
                  "--split", "random", "--train-fraction", "0.05", "--out", run_dir)
    run.assert_user_error("run folder", "model.pt", "--overwrite")
    assert (run_dir / "model.pt").read_bytes() == b"old weights"
    assert _leftovers(run_dir, set()) == ["model.pt"]


def test_a_locked_destination_is_refused_at_once(tmp_path, ckpt):
    scene = _scene(tmp_path / "scene.tif")
    out = tmp_path / "map.tif"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom geolesf.io.atomic import output_lock\n"
         "with output_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(60)\n", str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.perf_counter()
        run = _predict(scene, ckpt, out, "--no-preview")
        run.assert_user_error("map.tif", "is being written by another geolesf run", f"pid {holder.pid}")
        assert time.perf_counter() - started < 30
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()


def _pixels_and_tags(path: Path) -> tuple[str, dict[str, str]]:
    with rasterio.open(path) as src:
        arr = src.read()
        tags = src.tags()
    return hashlib.sha256(arr.tobytes()).hexdigest(), tags


def test_two_concurrent_predicts_to_one_out(tmp_path, ckpt, shared_data):
    scene = shared_data / "rasterio_landsat7" / "RGB.byte.tif"
    out = tmp_path / "map.tif"
    cmd = [sys.executable, "-m", "geolesf.cli.main", "predict", str(scene), "--checkpoint", str(ckpt), "--out",
           str(out), "--tile", "64", "--overlap", "16", "--batch-size", "1", "--no-preview"]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lock = tmp_path / ".map.tif.lock"
    deadline = time.time() + 120
    while not lock.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    second = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    results = []
    for proc in (first, second):
        o, e = proc.communicate(timeout=600)
        results.append((proc.returncode, o, e))
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], results
    from tests.faults.conftest import Run

    refused = next(Run(*r) for r in results if r[0] == 2)
    refused.assert_user_error("map.tif", "is being written by another geolesf run")
    assert first.returncode == 0, "the run that started first finishes"
    single = tmp_path / "single" / "map.tif"
    single.parent.mkdir()
    ok = geolesf("predict", scene, "--checkpoint", ckpt, "--out", single, "--tile", "64", "--overlap", "16",
                 "--batch-size", "1", "--no-preview")
    assert ok.code == 0, ok.err
    assert _pixels_and_tags(out) == _pixels_and_tags(single)
    assert _leftovers(tmp_path, {"map.tif", "map.qml", "single"}) == []
