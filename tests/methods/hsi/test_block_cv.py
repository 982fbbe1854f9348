"""``geolesf train --cv-blocks K`` with vector labels: one run per fold and a summary with mean ± std and leakage."""

from __future__ import annotations

import json

import numpy as np
import yaml

from geolesf.cli.main import main
from tests import scenes

ROWS, COLS = slice(40, 100), slice(0, 60)


def test_block_cross_validation_from_polygons(tmp_path, capsys):
    scenes.write_scene(tmp_path / "scene.tif", ROWS, COLS)
    gt = scenes.ground_truth()[ROWS, COLS]
    scenes.polygons(gt, scenes.transform(ROWS.start, COLS.start), names=scenes.class_names()).to_file(
        tmp_path / "polygons.gpkg")
    out = tmp_path / "cv"
    rc = main(["train", "--model", "rf", "--cube", str(tmp_path / "scene.tif"), "--labels", str(tmp_path / "polygons.gpkg"),
               "--label-field", "class", "--cv-blocks", "3", "--patch-size", "5", "--set", "data.block_size=10",
               "--set", "model.args={n_estimators: 20, n_jobs: 1}", "--out", str(out)])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cv_blocks"] == 3 and summary["buffer"] == 2 and summary["block_size"] == 10
    folds = [json.loads((out / f"fold_{f}" / "metrics.json").read_text()) for f in range(3)]
    for key in ("OA", "AA", "kappa"):
        vals = np.array([m[key] for m in folds])
        assert summary[key]["values"] == vals.tolist()
        assert np.isclose(summary[key]["mean"], vals.mean()) and np.isclose(summary[key]["std"], vals.std(ddof=1))
    assert 0.3 < summary["OA"]["mean"] < 1.0 and summary["OA"]["std"] > 0
    assert [f["leakage"]["test_patches_with_train_pixels"] for f in summary["folds"]] == [0, 0, 0]
    assert summary["max_leakage_fraction"] == 0.0
    # The folds' test pixels partition the labelled pixels of the polygons.
    assert sum(f["test_pixels"] for f in summary["folds"]) == int((gt > 0).sum())
    fold_cfg = yaml.safe_load((out / "fold_1" / "config.yaml").read_text())
    assert fold_cfg["data"]["cv_fold"] == 1 and fold_cfg["data"]["cv_blocks"] == 3
    assert "3-fold block CV: OA" in capsys.readouterr().out


def test_cv_blocks_refuses_seeds_and_test_labels(tmp_path, capsys):
    scenes.write_scene(tmp_path / "scene.tif", ROWS, COLS)
    base = ["train", "--model", "rf", "--cube", str(tmp_path / "scene.tif"), "--labels",
            str(scenes.EMBEDDED / "Indian_pines_gt.mat"), "--cv-blocks", "3", "--out", str(tmp_path / "o")]
    assert main([*base, "--set", "trainer.seeds=[0, 1]"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert main([*base, "--test-labels", str(tmp_path / "scene.tif")]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert not (tmp_path / "o" / "summary.json").exists()
