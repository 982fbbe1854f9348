"""``geolesf train``: help without torch, flags → config, a quick RF run on a real crop."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from geolesf.cli import main as cli_main
from geolesf.cli import train as train_cli

REPO = Path(__file__).resolve().parents[2]


def _parse(argv):
    parser = argparse.ArgumentParser()
    train_cli.add_parser(parser.add_subparsers())
    return parser.parse_args(["train", *argv])


def test_help_does_not_import_torch():
    code = (
        "import sys, io, contextlib\n"
        "import argparse\n"
        "from geolesf.cli import train\n"
        "p = argparse.ArgumentParser(); train.add_parser(p.add_subparsers())\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    try: p.parse_args(['train', '--help'])\n"
        "    except SystemExit: pass\n"
        "assert '--train-fraction' in buf.getvalue() and 'leakage' in buf.getvalue()\n"
        "assert 'torch' not in sys.modules and 'sklearn' not in sys.modules, 'heavy import'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_flags_map_onto_config(tmp_path):
    args = _parse([
        "--config", str(REPO / "geolesf" / "configs" / "baselines" / "indian_pines_svm.yaml"), "--model", "rf", "--split", "disjoint",
        "--train-fraction", "0.2", "--patch-size", "9", "--seeds", "0,1,2", "--epochs", "3",
        "--lr", "0.01", "--batch-size", "8", "--out", str(tmp_path / "o"), "--set", "data.block_size=12",
    ])
    module, cfg = train_cli.build_config(args)
    assert module.__name__ == "geolesf.methods.hsi.train" and cfg.task == "hsi"
    assert cfg.model.name == "rf" and cfg.data.split == "disjoint" and cfg.data.train_fraction == 0.2
    assert cfg.data.patch_size == 9 and cfg.trainer.seeds == [0, 1, 2] and cfg.trainer.epochs == 3
    assert cfg.trainer.lr == 0.01 and cfg.trainer.batch_size == 8 and cfg.data.block_size == 12
    assert cfg.data.class_names[16] == "Stone-Steel-Towers"
    with pytest.raises(SystemExit):
        _parse(["--seeds", "a,b"])


def test_quick_rf_run_on_crop(shared_data, tmp_path, capsys):
    cube = scipy.io.loadmat(shared_data / "indian_pines" / "IP_200_M.mat")["data_M"][:50, :70, ::4]
    gt = scipy.io.loadmat(shared_data / "indian_pines" / "Indian_pines_gt.mat")["indian_pines_gt"][:50, :70]
    gt = np.where(np.isin(gt, [c for c in range(1, 17) if (gt == c).sum() >= 20]), gt, 0)
    scipy.io.savemat(tmp_path / "c.mat", {"cube": cube})
    scipy.io.savemat(tmp_path / "g.mat", {"gt": gt.astype(np.uint8)})
    out = tmp_path / "run"
    rc = cli_main.main([
        "train", "--model", "rf", "--cube", str(tmp_path / "c.mat"), "--labels", str(tmp_path / "g.mat"),
        "--split", "random", "--train-fraction", "0.1", "--seed", "0", "--out", str(out),
        "--set", "model.args={n_estimators: 10, n_jobs: 1}",
    ])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["split"]["name"] == "random" and m["model"]["args"]["n_estimators"] == 10
    assert {p.name for p in out.iterdir()} >= {"metrics.json", "config.yaml", "classmap.tif", "preview.png"}
    assert "OA" in capsys.readouterr().out


def test_user_error_exit_2(shared_data, tmp_path, capsys):
    rc = cli_main.main([
        "train", "--model", "rf", "--cube", str(shared_data / "indian_pines" / "IP_200_M.mat:nokey"),
        "--labels", str(shared_data / "indian_pines" / "Indian_pines_gt.mat"), "--out", str(tmp_path / "x"),
    ])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "available keys: data_M" in err
    assert len(err.splitlines()) == 1


def test_task_key_selects_module_and_rejects_unknown(tmp_path, capsys):
    from geolesf.cli.main import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: segmentaton\nout: x\n")
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: task: unknown task 'segmentaton'; did you mean 'segmentation'?")
    cfg.write_text("task: segmentation\n")
    assert main(["train", "--config", str(cfg), "--split", "random"]) == 2
    assert "--split: only for the hsi task" in capsys.readouterr().err


def test_failed_run_leaves_no_new_run_folder(tmp_path, capsys):
    """A run that fails on its data removes the (empty) run folder and parents it created."""
    out = tmp_path / "new" / "run"
    code = cli_main.main(["train", "--model", "rf", "--cube", "indian_pines", "--labels", str(tmp_path / "none.gpkg"),
                          "--label-field", "class", "--out", str(out)])
    assert code == 2 and "vector labels none.gpkg cannot be placed" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
