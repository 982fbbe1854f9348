"""``geolesf train`` of the segmentation task from a GeoPackage of points / scribbles (real SpaceNet crops)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from geolesf.cli.main import main
from geolesf.data.weak_labels import points_from_mask, points_to_vector, scribbles_from_mask, scribbles_to_vector
from geolesf.io.labels import burn_vector_labels
from tests.scenes import crop_geotiff

FAST = ["--set", "trainer.epochs=2", "--set", "trainer.steps_per_epoch=2", "--set", "trainer.chip=64",
        "--set", "trainer.batch_size=2", "--set", "model.args={base: 4, depth: 2}"]


@pytest.fixture(scope="module")
def scene(shared_data, tmp_path_factory):
    """Two spatially separate 256² crops (train / test) of the SpaceNet sample, the footprints and weak labels."""
    folder = tmp_path_factory.mktemp("weak_scene")
    footprints = shared_data / "spacenet_solaris" / "geotiff_labels.geojson"
    out = {"footprints": footprints}
    sample = shared_data / "spacenet_solaris" / "sample_geotiff.tif"
    for name, win in (("train", Window(100, 300, 256, 256)), ("test", Window(500, 300, 256, 256))):
        out[name] = crop_geotiff(sample, folder / f"{name}.tif", win)
    with rasterio.open(out["train"]) as src:
        crs, transform = src.crs, src.transform
    burned = burn_vector_labels(footprints, crs=crs, transform=transform, shape=(256, 256))
    mask = np.where(burned.data == -1, 0, burned.data).astype(np.uint8)
    names = {0: "background", 1: "building"}
    out["points"] = points_to_vector(points_from_mask(mask, per_class=20, seed=0), folder / "points.gpkg",
                                     crs=crs, transform=transform, class_names=names)
    out["scribbles"] = scribbles_to_vector(scribbles_from_mask(mask, seed=0, max_length=50), folder / "lines.gpkg",
                                           crs=crs, transform=transform, class_names=names)
    return out


def test_points_geopackage_to_map_qml_and_metrics(scene, tmp_path):
    run = tmp_path / "run"
    rc = main(["train", "--config", "segmentation/unet_spacenet_buildings", "--out", str(run),
               "--set", f"data.image={scene['train']}", "--set", f"data.labels={scene['points']}",
               "--set", "data.supervision=points", "--set", "data.label_field=class",
               "--set", f"data.eval_labels={scene['footprints']}",
               "--set", f"data.test_image={scene['test']}", "--set", f"data.test_labels={scene['footprints']}", *FAST])
    assert rc == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["supervision"]["type"] == "points" and m["supervision"]["options"]["prior_weight"] == 0.01
    assert m["supervision"]["labelled_share"] == pytest.approx(40 / 256**2)
    assert m["supervision"]["burn"]["pixels_per_class"] == {"0": 20, "1": 20}
    # warm-up (half the epochs): partial CE alone in epoch 1, the prior on in epoch 2
    assert "gated_crf" not in m["history"][0] and {"partial_ce", "gated_crf"} <= set(m["history"][1])
    for key in ("training_scene_fit", "eval_labels", "test"):
        assert 0.0 <= m[key]["mIoU"] <= 1.0 and set(m[key]["per_class_IoU"]) == {"background", "building"}
    with rasterio.open(run / "classmap.tif") as cm, rasterio.open(scene["train"]) as src:
        assert cm.crs == src.crs and cm.transform == src.transform
    assert (run / "classmap.qml").read_text().count("building") >= 1
    with rasterio.open(run / "labels.tif") as lab:
        assert int((lab.read(1) != 255).sum()) == 40 and lab.nodata == 255


def test_scribbles_and_one_line_errors(scene, tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["train", "--config", "segmentation/unet_spacenet_buildings", "--out", str(run),
               "--set", f"data.image={scene['train']}", "--set", f"data.labels={scene['scribbles']}",
               "--set", "data.supervision=scribbles", "--set", "data.label_field=class",
               "--set", "data.supervision_args={prior_weight: 0.5}", *FAST])
    assert rc == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["supervision"]["type"] == "scribbles" and m["supervision"]["options"]["prior_weight"] == 0.5
    capsys.readouterr()
    for sets, text in ((["data.supervision=dots"], "'dots' is not a supervision type"),
                       (["data.supervision=points", "data.supervision_args={radius: 3, sigma: 1}"],
                        "unknown key(s) sigma"),
                       (["trainer.class_weights=inverse"], "trainer.class_weights must be one of")):
        bad = tmp_path / "bad"
        args = ["train", "--config", "segmentation/unet_spacenet_buildings", "--out", str(bad),
                "--set", f"data.image={scene['train']}", "--set", f"data.labels={scene['points']}"]
        for s in sets:
            args += ["--set", s]
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and text in err[0], err
        assert not bad.exists()


def test_points_with_random_walk_labels_and_class_weights(scene, tmp_path):
    run = tmp_path / "run"
    rc = main(["train", "--config", "segmentation/unet_spacenet_buildings", "--out", str(run),
               "--set", f"data.image={scene['train']}", "--set", f"data.labels={scene['points']}",
               "--set", "data.supervision=points", "--set", "data.label_field=class",
               "--set", "data.supervision_args={prior_weight: 0, propagate: 0.5}",
               "--set", "trainer.class_weights=enet", *FAST])
    assert rc == 0
    m = json.loads((run / "metrics.json").read_text())
    sup = m["supervision"]
    assert sup["options"]["propagate"] == 0.5 and sup["labelled_share"] == pytest.approx(40 / 256**2)
    assert 0.05 < sup["propagated_share"] < 1.0  # the walk labelled far more than the 40 points
    assert all("propagated_ce" in h and "gated_crf" not in h for h in m["history"])
    from geolesf.methods.unet.checkpoint import load

    # 20 points per class: shares 0.5, 0.5 → ENet weights 1 / ln 1.52 = 2.388 each (recorded in the checkpoint)
    assert load(run / "model.pt").extra["class_weights"] == pytest.approx([2.388, 2.388], abs=1e-3)


def test_points_with_pseudo_label_rounds_and_scribbles_with_a_mean_teacher(scene, tmp_path, capsys):
    base = ["train", "--config", "segmentation/unet_spacenet_buildings", "--set", f"data.image={scene['train']}",
            "--set", "data.label_field=class", "--set", "trainer.class_weights=enet", *FAST]
    run = tmp_path / "rounds"
    assert main([*base, "--out", str(run), "--set", f"data.labels={scene['points']}",
                 "--set", "data.supervision=points",
                 "--set", "data.supervision_args={prior_weight: 0, rounds: 1, round_threshold: 0.6}"]) == 0
    sup = json.loads((run / "metrics.json").read_text())["supervision"]
    hist = json.loads((run / "metrics.json").read_text())["history"]
    assert [r["epoch"] for r in sup["rounds"]] == [1]  # 2 epochs, 1 round: after epoch 1
    assert 0.0 <= sup["rounds"][0]["pseudo_share"] <= 1.0 and sup["saved"] == "trained network"
    assert "pseudo_ce" not in hist[0] and "pseudo_ce" in hist[1]
    run = tmp_path / "teacher"
    assert main([*base, "--out", str(run), "--set", f"data.labels={scene['scribbles']}",
                 "--set", "data.supervision=scribbles",
                 "--set", "data.supervision_args={prior_weight: 0, mean_teacher: {weight: 5, ramp_epochs: 2}}"]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["supervision"]["options"]["mean_teacher"] == {"weight": 5.0, "ema": 0.99, "ramp_epochs": 2.0,
                                                           "noise": 0.1, "jitter": 0.1, "save": "teacher"}
    assert m["supervision"]["saved"] == "mean teacher (EMA weights)" and m["supervision"]["rounds"] == []
    # the ramp per epoch: exp(-5) in epoch 1, exp(-5 · 0.25) in epoch 2
    assert [h["ramp"] for h in m["history"]] == pytest.approx([np.exp(-5), np.exp(-1.25)])
    assert all(h["consistency"] > 0 for h in m["history"]) and 0.0 <= m["training_scene_fit"]["mIoU"] <= 1.0
    capsys.readouterr()
    bad = tmp_path / "bad"
    assert main([*base, "--out", str(bad), "--set", f"data.labels={scene['points']}", "--set",
                 "data.supervision=points", "--set", "data.supervision_args={mean_teacher: {decay: 0.9}}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mean_teacher: unknown key(s) decay" in err[0] and not bad.exists()


def test_mask_with_an_unlabelled_half_and_a_mean_teacher(scene, tmp_path):
    with rasterio.open(scene["train"]) as src:
        profile = {"driver": "GTiff", "width": 256, "height": 256, "count": 1, "dtype": "uint8", "crs": src.crs,
                   "transform": src.transform, "nodata": 255}
    burned = burn_vector_labels(scene["footprints"], crs=profile["crs"], transform=profile["transform"],
                                shape=(256, 256))
    mask = np.where(burned.data == -1, 0, burned.data).astype(np.uint8)
    mask[:, 128:] = 255  # the right half unlabelled
    with rasterio.open(tmp_path / "half.tif", "w", **profile) as dst:
        dst.write(mask, 1)
    run = tmp_path / "run"
    assert main(["train", "--config", "segmentation/unet_spacenet_buildings", "--out", str(run),
                 "--set", f"data.image={scene['train']}", "--set", f"data.labels={tmp_path / 'half.tif'}",
                 "--set", "data.supervision_args={mean_teacher: {ramp_epochs: 0}}", *FAST]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["supervision"]["type"] == "mask" and m["supervision"]["saved"] == "mean teacher (EMA weights)"
    assert m["supervision"]["mean_teacher"]["weight"] == 10.0
    assert all(h["ramp"] == 1.0 and h["consistency"] > 0 and np.isfinite(h["loss"]) for h in m["history"])
