"""``data.supervision: boxes`` and ``noisy``: the objectives on tiny tensors, then end to end from the CLI on
the SpaceNet sample (a box GeoPackage in another CRS → map + .qml + metrics + polygons; a noisy raster →
overruled.tif)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from torch.nn import functional as F

from geolesf.cli.main import main
from geolesf.data.weak_labels_box import boxes_from_mask, noisy_from_mask, write_boxes_gpkg, write_noisy_tif
from geolesf.errors import ConfigError
from geolesf.losses.box import colour_similarity, pairwise_loss, projection_loss
from geolesf.methods.unet.boxes import BoxObjective, SceneBoxes, box_objective
from geolesf.methods.unet.noisy import (
    HeadInput,
    NoisyObjective,
    confident_prediction,
    noisy_objective,
    overruled_stats,
)
from geolesf.methods.unet.objectives import IGNORE, make_objective
from geolesf.methods.unet.model import unet
from tests.scenes import spacenet_footprint_mask

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "geolesf" / "configs" / "segmentation" / "unet_spacenet_buildings.yaml"
TINY = ["--set", "trainer.epochs=2", "--set", "trainer.steps_per_epoch=2", "--set", "trainer.chip=64",
        "--set", "trainer.batch_size=2", "--set", "model.args={base: 4, depth: 2}"]


def test_dispatch_and_options():
    data = SimpleNamespace(supervision="boxes", supervision_args={"mode": "fill"}, background=0)
    assert isinstance(make_objective(data), BoxObjective)
    with pytest.raises(ConfigError, match="mode"):
        box_objective("boxes", SimpleNamespace(supervision_args={"mode": "ellipse"}, background=0))
    with pytest.raises(ConfigError, match="unknown key"):
        noisy_objective("noisy", SimpleNamespace(supervision_args={"q_value": 0.5}))
    assert isinstance(make_objective(SimpleNamespace(supervision="noisy", supervision_args=None)), NoisyObjective)


def _box_objective(mode: str, stride: int = 1) -> BoxObjective:
    """A 6×6 scene with one class-1 box over rows 1..3, columns 2..4; classes (0, 1)."""
    obj = BoxObjective(background=0, mode=mode, warmup_steps=0, stride=stride)
    obj.scene = SceneBoxes(ranges=np.array([[2, 1, 4, 3]]), class_ids=np.array([1]),
                           pixel_boxes=np.array([[2.0, 1.0, 5.0, 4.0]]))
    obj.channels, obj.class_ids = np.array([1]), [0, 1]
    return obj


def test_box_objective_is_ce_outside_plus_projection_plus_pairwise():
    obj = _box_objective("boxinst")
    torch.manual_seed(0)
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    image = torch.randn(1, 1, 4, 4)
    rows, cols = np.indices((6, 6))
    # the chip is the scene window at (row 2, col 1): the box (rows 1..3, cols 2..4) is cut at the top (in y)
    chip = (slice(2, 6), slice(1, 5))
    in_box = np.zeros((6, 6), bool)
    in_box[1:4, 2:5] = True
    target = torch.from_numpy(np.where(in_box, 1, 0)[chip][None]).long()
    rasters = {"target": target, "valid": torch.ones(1, 4, 4, dtype=torch.bool),
               "row": torch.from_numpy(rows[chip][None]), "col": torch.from_numpy(cols[chip][None]),
               "in_box": torch.from_numpy(in_box[chip][None])}
    loss, stats = obj.loss(logits, image, rasters)
    # by hand: the box in chip coordinates is rows 0..1, columns 1..3, cut in y → only the y-projection
    log_p = F.log_softmax(logits, 1)
    outside = torch.where(rasters["in_box"], torch.full_like(target, IGNORE), target)
    ce = F.nll_loss(log_p, outside, ignore_index=IGNORE)
    proj = projection_loss(log_p.exp()[0], torch.tensor([[1, 1, 0, 3, 1, 0, 1]]))
    pair = pairwise_loss(log_p, colour_similarity(image), rasters["in_box"])
    assert loss.item() == pytest.approx((ce + proj + pair).item(), abs=1e-6)
    assert stats["projection"] == pytest.approx(proj.item(), abs=1e-6)
    # stride 2 (BoxInst's mask stride is 4): the y-projection of the 2×2 cell means; the box's rows 0..1 and
    # columns 1..3 are cell row 0 and cell columns 0..1
    _, stats = _box_objective("boxinst", stride=2).loss(logits, image, rasters)
    cells = F.avg_pool2d(log_p.exp(), 2)[0]
    assert stats["projection"] == pytest.approx(projection_loss(cells, torch.tensor([[1, 0, 0, 1, 0, 0, 1]])).item(),
                                                abs=1e-6)
    assert BoxObjective().options["stride"] == 4
    # the 3 × 3 box is wider and taller than a 2-px chip (no projection ever applies), not than a 3-px one
    state = SimpleNamespace(class_ids=[0, 1], chip=2, epochs=5)
    obj.on_epoch_end(0, state)
    assert obj.report()["boxes_larger_than_chip"] == 1
    obj.on_epoch_end(0, SimpleNamespace(class_ids=[0, 1], chip=3, epochs=5))
    assert obj.report()["boxes_larger_than_chip"] == 0
    fill = _box_objective("fill")
    loss, _ = fill.loss(logits, image, rasters)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, target).item(), abs=1e-6)


def test_head_input_hook_captures_the_decoder_embeddings():
    model = unet(in_chans=1, num_classes=2, base=4, depth=1)
    hook = HeadInput(model)
    x = torch.randn(1, 1, 8, 8)
    logits = model(x)
    emb = hook.take()
    assert emb.shape == (1, 4, 8, 8) and hook.take() is None
    assert torch.allclose(model.head(emb), logits)


def test_noisy_objective_reassigns_a_flipped_pixel_and_drops_its_noisy_label():
    """Two-class chip whose embeddings separate the halves; pixel (1, 0) is labelled 1 in the class-0 half.

    With reassign on, that pixel leaves the fit term and gets L_LR = CE(logits, 0) (the WSSS test's case).
    """
    obj = NoisyObjective(loss="ce", reassign=True, reassign_from_epoch=1, agree=False)
    emb = torch.zeros(1, 2, 4, 4)
    emb[0, 0, :, :2] = 1.0
    emb[0, 1, :, 2:] = 1.0
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[..., 2:] = 1
    target[0, 1, 0] = 1
    obj.hook = SimpleNamespace(take=lambda: emb)
    torch.manual_seed(0)
    logits = torch.randn(1, 2, 4, 4)
    loss, stats = obj.loss(logits, None, {"target": target})
    kept = target.clone()
    kept[0, 1, 0] = IGNORE
    expect = F.cross_entropy(logits, kept, ignore_index=IGNORE) + F.cross_entropy(logits[0, :, 1, 0][None],
                                                                                 torch.tensor([0]))
    assert loss.item() == pytest.approx(expect.item(), abs=1e-6)
    assert stats["reassigned_share"] == pytest.approx(1 / 16)
    # agree (the default): only where the classifier predicts the prototype's class too — logits that say
    # 1 (the noisy label) at the flipped pixel keep it; logits that say 0 there move it
    agreeing = NoisyObjective(loss="ce", reassign=True, reassign_from_epoch=1)
    agreeing.hook = obj.hook
    says_one = logits.clone()
    says_one[0, 1, 1, 0] = says_one[0, 0, 1, 0] + 1
    _, stats = agreeing.loss(says_one, None, {"target": target})
    assert stats["reassigned_share"] == 0
    says_zero = logits.clone()
    says_zero[0, 0, 1, 0] = says_zero[0, 1, 1, 0] + 1  # p(0) = e / (1 + e) = 0.73: not confident (threshold 0.9)
    _, stats = agreeing.loss(says_zero, None, {"target": target})
    assert stats["reassigned_share"] == 0
    says_zero[0, 0, 1, 0] = says_zero[0, 1, 1, 0] + 3  # p(0) = 0.953: confident
    _, stats = agreeing.loss(says_zero, None, {"target": target})
    assert stats["reassigned_share"] == pytest.approx(1 / 16)
    # class weights (1, 19): the corrected p(0) = 0.953 / (0.953 + 0.047 / 19) = 0.9974 stays confident; weights
    # (19, 1) bring it to 0.953 / 19 / (0.953 / 19 + 0.047) = 0.516: no longer confident, not moved
    agreeing.class_weights = torch.tensor([19.0, 1.0])
    _, stats = agreeing.loss(says_zero, None, {"target": target})
    assert stats["reassigned_share"] == 0
    plain = NoisyObjective(loss="gce", q=0.7, reassign=False)
    loss, _ = plain.loss(logits, None, {"target": target})
    p_y = F.softmax(logits, 1).gather(1, target[:, None]).squeeze(1)
    assert loss.item() == pytest.approx(((1 - p_y ** 0.7) / 0.7).mean().item(), abs=1e-6)


def test_confident_prediction_by_hand():
    # logits (0, ln 3) → p = (0.25, 0.75); weights (1, 3) → ∝ (0.25, 0.25) → (0.5, 0.5)
    logits = torch.tensor([0.0, math.log(3)]).reshape(1, 2, 1, 1)
    assert confident_prediction(logits, None, 0.7).item() == 1
    assert confident_prediction(logits, None, 0.8).item() == -1
    assert confident_prediction(logits, torch.tensor([1.0, 3.0]), 0.5).item() in (0, 1)
    assert confident_prediction(logits, torch.tensor([1.0, 3.0]), 0.51).item() == -1
    assert confident_prediction(logits, torch.tensor([1.0, 9.0]), 0.7).item() == 0  # ∝ (0.25, 0.083) → 0.75


def test_overruled_stats_by_hand():
    labels = np.array([[0, 0, 1, 1], [0, 2, 2, 255]])
    pred = np.array([[0, 1, 1, 0], [0, 2, 0, 0]])
    labelled = labels != 255
    over, stats = overruled_stats(pred, labels, labelled, {0: "a", 1: "b", 2: "c"})
    assert over.tolist() == [[0, 1, 0, 1], [0, 0, 1, 255]]
    assert stats["pixels"] == 3 and stats["labelled"] == 7 and stats["share"] == pytest.approx(3 / 7)
    assert stats["per_class"]["a"]["share"] == pytest.approx(1 / 3) and stats["per_class"]["c"]["overruled"] == 1
    assert stats["to"] == {"a": {"b": 1}, "b": {"a": 1}, "c": {"a": 1}}


@pytest.fixture(scope="module")
def spacenet(shared_data, tmp_path_factory):
    sn = shared_data / "spacenet_solaris"
    return (sn, *spacenet_footprint_mask(sn, tmp_path_factory.mktemp("mask")))


def test_boxes_end_to_end_from_a_geopackage(spacenet, tmp_path, capsys):
    sn, mask, crs, transform = spacenet
    boxes = write_boxes_gpkg(tmp_path / "utm.gpkg", boxes_from_mask(mask, seed=0), crs=crs, transform=transform)
    wgs84 = tmp_path / "boxes.gpkg"  # the same boxes in another CRS: the reader reprojects them
    gpd.read_file(boxes).to_crs(4326).to_file(wgs84, driver="GPKG")
    run = tmp_path / "run"
    rc = main(["train", "--config", str(CONFIG), "--out", str(run), "--set", f"data.image={sn / 'sample_geotiff.tif'}",
               "--set", f"data.labels={wgs84}", "--set", "data.supervision=boxes",
               "--set", f"data.eval_labels={sn / 'geotiff_labels.geojson'}", *TINY])
    assert rc == 0
    metrics = json.loads((run / "metrics.json").read_text())
    sup = metrics["supervision"]
    assert sup["type"] == "boxes" and sup["boxes"] == 43 and sup["options"]["mode"] == "boxinst"
    assert 0 < sup["box_share"] < 0.1
    assert {"projection", "pairwise", "ce_outside"} <= set(metrics["history"][-1])
    assert 0 <= metrics["eval_labels"]["mIoU"] <= 1
    with rasterio.open(run / "classmap.tif") as dst, rasterio.open(sn / "sample_geotiff.tif") as src:
        assert dst.crs == src.crs and dst.transform == src.transform
    assert (run / "classmap.qml").is_file()
    capsys.readouterr()
    assert main(["export", str(run / "classmap.tif"), "--gpkg", str(tmp_path / "buildings.gpkg")]) == 0
    polys = gpd.read_file(tmp_path / "buildings.gpkg", layer="buildings")
    assert len(polys) > 0 and polys.crs == crs and {"class_id", "class_name"} <= set(polys.columns)


def test_recursive_boxes_end_to_end_map_and_polygons(spacenet, tmp_path, capsys):
    """mode recursive (Simple Does It): labels.tif is round 0 (box centres, box rings unlabelled), one
    pseudo-label round runs after epoch 1 of 2, the run writes the georeferenced map and polygonises."""
    sn, mask, crs, transform = spacenet
    boxes = write_boxes_gpkg(tmp_path / "boxes.gpkg", boxes_from_mask(mask, seed=0), crs=crs, transform=transform)
    run = tmp_path / "run"
    rc = main(["train", "--config", str(CONFIG), "--out", str(run), "--set", f"data.image={sn / 'sample_geotiff.tif'}",
               "--set", f"data.labels={boxes}", "--set", "data.supervision=boxes",
               "--set", "data.supervision_args={mode: recursive, rounds: 1}", *TINY])
    assert rc == 0
    sup = json.loads((run / "metrics.json").read_text())["supervision"]
    assert sup["options"]["mode"] == "recursive" and "Simple Does It" in sup["loss"]
    assert [r["epoch"] for r in sup["rounds"]] == [1]
    with rasterio.open(run / "labels.tif") as lab:
        start = lab.read(1)
    in_box = start == 255
    assert 0 < in_box.mean() < 0.1 and 0 < (start == 1).sum() < in_box.sum()  # centres: a fifth of each box
    with rasterio.open(run / "classmap.tif") as dst:
        assert dst.crs == crs and dst.transform == transform
    capsys.readouterr()
    assert main(["export", str(run / "classmap.tif"), "--gpkg", str(tmp_path / "map.gpkg")]) == 0
    assert (tmp_path / "map.gpkg").is_file()


@pytest.mark.parametrize("confidence", [0.0, 0.9])
def test_noisy_end_to_end_writes_overruled(spacenet, tmp_path, capsys, confidence):
    sn, mask, crs, transform = spacenet
    noisy, report = noisy_from_mask(mask, seed=0, boundary_px=2, drop_share=0.2, spurious_share=0.2)
    labels = write_noisy_tif(tmp_path / "noisy.tif", noisy, crs=crs, transform=transform,
                             class_names={0: "background", 1: "building"}, report=report)
    run = tmp_path / "run"
    rc = main(["train", "--config", str(CONFIG), "--out", str(run), "--set", f"data.image={sn / 'sample_geotiff.tif'}",
               "--set", f"data.labels={labels}", "--set", "data.supervision=noisy",
               "--set", "data.supervision_args={loss: gce, reassign: true, reassign_from_epoch: 2, "
               f"overrule_confidence: {confidence}}}", *TINY])
    assert rc == 0
    sup = json.loads((run / "metrics.json").read_text())["supervision"]
    assert sup["type"] == "noisy" and "generalized cross-entropy" in sup["loss"]
    with rasterio.open(run / "overruled.tif") as src, rasterio.open(run / "classmap.tif") as cm:
        assert src.crs == crs and src.transform == transform
        over, pred = src.read(1), cm.read(1)
    # the raster marks exactly the pixels whose predicted class differs from the input map (with a confidence:
    # split into 1 = overruled with a probability ≥ 0.9 and 2 = unsure)
    if confidence == 0:
        assert set(np.unique(over)) <= {0, 1, 255}
        assert np.array_equal(over == 1, pred != noisy)
    else:
        assert set(np.unique(over)) <= {0, 1, 2, 255}
        assert np.array_equal((over == 1) | (over == 2), pred != noisy)
        assert sup["overruled"]["unsure_pixels"] == int((over == 2).sum())
    assert sup["overruled"]["share"] == pytest.approx(float((over == 1).mean()), abs=1e-9)
    shares = {k: v["share"] for k, v in sup["overruled"]["per_class"].items()}
    assert set(shares) == {"background", "building"}
    assert "overruled" in (run / "overruled.qml").read_text()


def test_filling_rate_loss_by_hand():
    """One 1×4 box on channel 1 with p₁ = (0.9, 0.2, 0.6, 0.1), ρ = 0.5: the top 2 pixels (0.9 and 0.6) are
    trained as class 1 → −(ln 0.9 + ln 0.6) / n with n = 4 pixels → (0.105361 + 0.510826) / 4 = 0.154047."""
    from geolesf.methods.unet.boxes import filling_rate_loss

    p1 = torch.tensor([0.9, 0.2, 0.6, 0.1])
    log_p = torch.stack([(1 - p1).log(), p1.log()]).reshape(1, 2, 1, 4).requires_grad_(True)
    loss = filling_rate_loss(log_p, [torch.tensor([[1, 0, 0, 3, 0, 1, 1]])], 0.5, n=4)
    assert loss.item() == pytest.approx(-(np.log(0.9) + np.log(0.6)) / 4, abs=1e-6)
    loss.backward()
    assert log_p.grad[0, 1, 0].tolist() == pytest.approx([-0.25, 0.0, -0.25, 0.0])


def test_batchnorm_recalibration_recomputes_the_running_statistics():
    """A 1×1 conv (weight 1) + BatchNorm on a 4×4 image of 0..15, chips of 2 px → 4 windows, 2 batches of 2.
    With momentum None the running mean is the average of the two batch means = the image mean 7.5; the
    stale statistics (mean 100) are gone, the weights and the momentum are unchanged."""
    from geolesf.methods.unet.calibration import recalibrate_batchnorm

    conv = torch.nn.Conv2d(1, 1, 1, bias=False)
    torch.nn.init.ones_(conv.weight)
    bn = torch.nn.BatchNorm2d(1)
    bn.running_mean.fill_(100.0)
    model = torch.nn.Sequential(conv, bn).eval()
    image = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    assert recalibrate_batchnorm(model, image, 2, batch_size=2) == 4
    assert bn.running_mean.item() == pytest.approx(7.5)
    # batches: windows (0,0)+(0,2) = rows 0-1 → values 0..7, mean 3.5, unbiased var 6;
    # windows (2,0)+(2,2) → 8..15, same var → running var 6
    assert bn.running_var.item() == pytest.approx(6.0)
    assert bn.momentum == 0.1 and not model.training and conv.weight.item() == 1.0
    assert recalibrate_batchnorm(torch.nn.Conv2d(1, 1, 1), image, 2) == 0
