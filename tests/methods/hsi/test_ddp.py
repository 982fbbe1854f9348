"""Multi-process training through configuration only: 2 CPU processes (DDP, gloo) equal one process.

The crop is trained full-batch (every training pixel in one batch, an even count), so the mean
gradient over two ranks of half the pixels each is the single-process gradient up to float
rounding, and the two runs must end with the same weights and scores within a small tolerance.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
import torch
import yaml


@pytest.fixture(scope="module")
def config(shared_data, tmp_path_factory):
    """Rows 0..40 × cols 0..60 of real Indian Pines, 20 bands; 3 classes × 12 training pixels."""
    cube = scipy.io.loadmat(shared_data / "indian_pines" / "IP_200_M.mat")["data_M"][:40, :60, ::10]
    gt = scipy.io.loadmat(shared_data / "indian_pines" / "Indian_pines_gt.mat")["indian_pines_gt"][:40, :60]
    keep = [int(c) for c, n in zip(*np.unique(gt, return_counts=True)) if c > 0 and n >= 40][:3]
    gt = np.where(np.isin(gt, keep), gt, 0).astype(np.uint8)
    folder = tmp_path_factory.mktemp("ddp")
    scipy.io.savemat(folder / "cube.mat", {"X": cube})
    scipy.io.savemat(folder / "gt.mat", {"gt": gt})
    cfg = {
        "task": "hsi",
        "out": str(folder / "run"),
        "model": {"name": "s2mamba", "args": {"dims": 8, "d_state": 4, "dropout": 0.0}},
        "data": {"cube": str(folder / "cube.mat"), "labels": str(folder / "gt.mat"), "split": "count",
                 "per_class": 12, "patch_size": 5, "normalize": "scene"},
        "trainer": {"epochs": 4, "batch_size": 64, "lr": 5e-3, "seed": 0, "accelerator": "cpu"},
    }
    path = folder / "ddp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, len(keep)


def _train(config_path, out, *overrides):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("LOCAL_RANK", None), env.pop("MASTER_PORT", None)
    cmd = [sys.executable, "-m", "geolesf.cli.main", "train", "--config", str(config_path)]
    for item in (f"out={out}", *overrides):
        cmd += ["--set", item]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_ddp_two_processes_equal_single_process(config, tmp_path):
    path, n_classes = config
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    _train(path, single)
    _train(path, ddp, "trainer.devices=2", "trainer.strategy=ddp")
    a = torch.load(single / "model.pt", weights_only=True)
    b = torch.load(ddp / "model.pt", weights_only=True)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, wa in a["state_dict"].items():
        wb = b["state_dict"][key]
        if wa.is_floating_point():
            torch.testing.assert_close(wb, wa, atol=1e-5, rtol=1e-4, msg=f"{key} differs")
    ma = json.loads((single / "metrics.json").read_text())
    mb = json.loads((ddp / "metrics.json").read_text())
    assert len(ma["class_ids"]) == n_classes
    assert mb["OA"] == pytest.approx(ma["OA"], abs=0.01)
    cfg = yaml.safe_load((ddp / "config.yaml").read_text())
    assert cfg["trainer"]["strategy"] == "ddp" and cfg["trainer"]["devices"] == 2
    assert sorted(p.name for p in ddp.iterdir()) == sorted(p.name for p in single.iterdir())
