"""A wheel built from the repository works outside the clone.

The wheel is built from a copy of the repository (so the clone gets no ``build/`` or ``*.egg-info``),
without build isolation (setuptools of the test's interpreter; nothing is downloaded), and installed
with ``pip install --no-deps --target`` into a fresh folder: the installed dependencies of the test's
interpreter are used, geolesf itself only from the wheel. Every command runs with that folder first on
``PYTHONPATH`` and the working folder outside the clone, and the tests check that ``geolesf`` is imported
from the installed wheel, never from the clone (an editable install of the clone must not shadow it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "runs", "demo_out", "site",
                                "__pycache__", ".pytest_cache", ".whl", "*.pyc")

#: Files the package must carry (package data): shipped configs, catalog, embedded data and weights,
#: the selective-scan kernel source, the STAC schemas, the QGIS plugin's sources (``geolesf qgis-plugin``).
EXPECTED = (
    "geolesf/configs/s2mamba/indian_pines.yaml",
    "geolesf/configs/baselines/indian_pines_rf.yaml",
    "geolesf/configs/segmentation/unet_spacenet_buildings.yaml",
    "geolesf/data_catalog/indian_pines.yaml",
    "geolesf/embedded/indian_pines/IP_200_M.mat",
    "geolesf/embedded/indian_pines/Indian_pines_gt.mat",
    "geolesf/embedded/indian_pines/indianpines_ts.tif",
    "geolesf/embedded/landsat7/RGB.byte.tif",
    "geolesf/embedded/weights/s2mamba_indian_pines_dase.pt",
    "geolesf/ops/selective_scan/scan_kernel.c",
    "geolesf/ops/selective_scan/scan_kernel_body.h",
    "geolesf/ops/selective_scan/scan_kernel_infer.h",
    "geolesf/ops/selective_scan/scan_kernel_grad.h",
    "geolesf/ops/selective_scan/scan_kernel_fused.h",
    "geolesf/export/stac_schemas/classification-v2.0.0.json",
    "geolesf/export/stac_schemas/projection-v2.0.0.json",
    "geolesf/weights_catalog/sam.yaml",
    "geolesf/qgis_plugin/geolesf_qgis/__init__.py",
    "geolesf/qgis_plugin/geolesf_qgis/runner.py",
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(site folder, wheel path)``: the wheel built from a copy of the repository, installed into a fresh folder."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=IGNORE)
    dist = base / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-q", "-w", str(dist), str(src)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = dist.glob("geolesf-*.whl")
    site = base / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                              str(site), str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    return site, wheel


def _run(site: Path, cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("GEOLESF_DATA", "GEOLESF_CATALOG", "PYTHONPATH")}
    env.update(PYTHONPATH=str(site), GEOLESF_HOME=str(cwd / "home"), GEOLESF_OFFLINE="1")
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_wheel_carries_the_package_data(installed):
    site, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [name for name in EXPECTED if name not in names]
    assert missing == []
    shipped = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "geolesf" / "configs").rglob("*.yaml"))
    assert shipped and set(shipped) <= names
    assert not any(n.startswith(("tests/", "configs/", "benchmarks/")) for n in names)


def test_the_installed_wheel_is_what_runs(installed, tmp_path):
    site, _ = installed
    proc = _run(site, tmp_path, "-c", "import geolesf, geolesf.cli.main as m; print(geolesf.__file__); "
                "print(m.__file__); from geolesf.paths import packaged_configs; print(len(packaged_configs()))")
    assert proc.returncode == 0, proc.stderr
    first, second, count = proc.stdout.split()
    for path in (first, second):
        assert Path(path).resolve().is_relative_to(site.resolve()), path
        assert not Path(path).resolve().is_relative_to(ROOT.resolve())
    assert int(count) == len(list((ROOT / "geolesf" / "configs").rglob("*.yaml")))


@pytest.mark.slow
def test_demo_prediction_and_a_config_by_name_from_the_wheel(installed, tmp_path):
    """The demo prediction (shipped checkpoint on the shipped cube, by dataset name) and a shipped config
    by name, run from the installed wheel in a folder outside the clone."""
    site, _ = installed
    cli = ("-m", "geolesf.cli.main")
    proc = _run(site, tmp_path, *cli, "predict", "indian_pines", "--checkpoint", "s2mamba:indian_pines_dase",
                "--out", "maps/map.tif")
    assert proc.returncode == 0, proc.stderr[-3000:]
    import rasterio

    with rasterio.open(tmp_path / "maps" / "map.tif") as src:
        assert (src.width, src.height) == (145, 145)
        assert src.tags().get("model") == "s2mamba" or "s2mamba" in str(src.tags())
    assert (tmp_path / "maps" / "map.png").is_file()
    proc = _run(site, tmp_path, *cli, "train", "--config", "baselines/indian_pines_rf", "--set",
                "model.args={n_estimators: 20, n_jobs: 1}", "--no-scene-map", "--out", "runs/rf")
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    metrics = json.loads((tmp_path / "runs" / "rf" / "metrics.json").read_text())
    assert metrics["split"]["name"] == "random" and 0.5 < metrics["OA"] < 1.0
    assert Path(metrics["data"]["cube"]["path"]).resolve().is_relative_to(site.resolve())
