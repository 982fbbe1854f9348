"""``geolesf predict`` stays light and its outputs stay the same across refactors.

- In a fresh interpreter, predicting a GeoTIFF with an S²Mamba and with a unet checkpoint never imports
  Lightning (inference does not depend on training code).
- The class maps of the demo (``make demo``: S²Mamba on the shipped Indian Pines cube) and of a tiled
  unet prediction equal, pixel for pixel and tag for tag, what the predictor wrote before the
  methods/ layout (hashes recorded on main at 04bbf85).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio

from tests.checkpoints import seeded_unet_checkpoint

EMBEDDED = Path(__file__).resolve().parents[1] / "geolesf" / "embedded"

# sha256 of the decoded pixels (band-sequential bytes) recorded before the move.
DEMO_MAP_SHA256 = "0f1257fbf48a97bba27febdfeb3ca5ebc682478ed95e13c7bb1a7fbfd1713fdc"
UNET_MAP_SHA256 = "6f9f3fab0d3a195af46d123bb8328015cb3822a955645b20f1895216a18f31a9"
# The probabilities changed in their last float32 bits when the predictor began feeding CPU convolutions a
# channels-last batch (memory_format="auto"); the class map did not. memory_format="contiguous" gives the old
# probabilities bit for bit (tests/predict/test_batching.py).
UNET_PROBS_SHA256 = "c8e60f4f45d136f5e73adb5343741c1609d58873381fcd38287d29c436c8df58"


def _pixels(path: Path) -> tuple[str, dict[str, str]]:
    with rasterio.open(path) as src:
        tags = {k: v for k, v in src.tags().items() if k not in ("geolesf_version", "source", "weights_sha256")}
        return hashlib.sha256(src.read().tobytes()).hexdigest(), tags


def _hsi_geotiff(path: Path) -> Path:
    """A 24×24 crop of the shipped Indian Pines cube as a 200-band GeoTIFF with a CRS."""
    from rasterio.transform import from_origin

    from geolesf.io.hsi import read_cube

    cube = read_cube(EMBEDDED / "indian_pines" / "IP_200_M.mat").data[:24, :24]
    profile = {"driver": "GTiff", "height": 24, "width": 24, "count": cube.shape[2], "dtype": "float32",
               "crs": "EPSG:32616", "transform": from_origin(500000, 4500000, 20, 20)}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.ascontiguousarray(cube.transpose(2, 0, 1), dtype=np.float32))
    return path


def _predict_in_fresh_interpreter(args: list[str]) -> dict[str, object]:
    code = ("import sys, json\nfrom geolesf.cli.main import main\nrc = main(['predict', *sys.argv[1:]])\n"
            "print(json.dumps({'rc': rc, 'lightning': 'lightning' in sys.modules, "
            "'train': sorted(m for m in sys.modules if m == 'geolesf.training' or "
            "(m.startswith('geolesf.methods.') and m.endswith(('.train', '.patch_training'))))}))")
    # Two math threads, as when the hashes were recorded: a dask LocalCluster started by an earlier test
    # leaves OMP/MKL/OPENBLAS_NUM_THREADS=1 in this process's environment, and float32 sums of the
    # probabilities depend on the thread count in their last bit.
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS") and k != "MALLOC_TRIM_THRESHOLD_"}
    env.update(OMP_NUM_THREADS="2", MKL_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_s2mamba_geotiff_prediction_never_imports_lightning(tmp_path):
    scene = _hsi_geotiff(tmp_path / "ip_crop.tif")
    out = _predict_in_fresh_interpreter([str(scene), "--model", "s2mamba", "--checkpoint", "s2mamba:indian_pines_dase",
                                         "--out", str(tmp_path / "map.tif"), "--no-preview"])
    assert out == {"rc": 0, "lightning": False, "train": []}
    with rasterio.open(tmp_path / "map.tif") as src:
        assert src.crs.to_epsg() == 32616 and src.read(1).shape == (24, 24)


def test_unet_prediction_never_imports_lightning_and_is_unchanged(tmp_path, shared_data):
    ckpt = seeded_unet_checkpoint(tmp_path / "unet.pt")
    scene = shared_data / "rasterio_landsat7" / "RGB.byte.tif"
    out = _predict_in_fresh_interpreter([str(scene), "--checkpoint", str(ckpt), "--out", str(tmp_path / "map.tif"),
                                         "--tile", "256", "--overlap", "32", "--batch-size", "4",
                                         "--probabilities", str(tmp_path / "probs.tif"), "--no-preview"])
    assert out == {"rc": 0, "lightning": False, "train": []}
    digest, tags = _pixels(tmp_path / "map.tif")
    assert digest == UNET_MAP_SHA256
    assert tags["CLASS_NAMES"] == json.dumps({"1": "water", "2": "forest", "3": "field", "4": "urban"})
    assert (tags["tile"], tags["overlap"], tags["blend"], tags["blend_margin"]) == ("256", "32", "cosine", "8")
    assert _pixels(tmp_path / "probs.tif")[0] == UNET_PROBS_SHA256


def test_demo_class_map_is_unchanged(tmp_path):
    from geolesf.cli.main import main

    out = tmp_path / "indian_pines_s2mamba.tif"
    assert main(["predict", str(EMBEDDED / "indian_pines" / "IP_200_M.mat"), "--model", "s2mamba",
                 "--checkpoint", "s2mamba:indian_pines_dase", "--out", str(out), "--no-preview"]) == 0
    digest, tags = _pixels(out)
    assert digest == DEMO_MAP_SHA256
    assert tags["model"] == "s2mamba" and tags["patch_size"] == "7"
