"""Saved rf/svm models (``geolesf-hsi-spectrum/1``): written by ``geolesf train``, used by
``geolesf predict`` (tiled GeoTIFF and whole .mat cube) and ``geolesf evaluate`` with the same results
as the run folder, and loaded only from trusted scikit-learn types."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import scipy.io
import torch
from rasterio.transform import from_origin

from geolesf.cli.main import main
from geolesf.errors import ModelError
from geolesf.methods.hsi import spectrum
from tests.conftest import EMBEDDED

IP = EMBEDDED / "indian_pines"


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """Indian Pines rows 0..80, every 4th band, as a georeferenced GeoTIFF and a .mat; its labels as .mat."""
    cube = scipy.io.loadmat(IP / "IP_200_M.mat")["data_M"][:80, :, ::4]
    gt = scipy.io.loadmat(IP / "Indian_pines_gt.mat")["indian_pines_gt"][:80].astype(np.uint8)
    folder = tmp_path_factory.mktemp("ip")
    with rasterio.open(folder / "ip.tif", "w", driver="GTiff", width=cube.shape[1], height=cube.shape[0],
                       count=cube.shape[2], dtype=cube.dtype, crs="EPSG:32616",
                       transform=from_origin(500000, 4500000, 20, 20)) as dst:
        dst.write(cube.transpose(2, 0, 1))
    scipy.io.savemat(folder / "ip.mat", {"X": cube})
    scipy.io.savemat(folder / "gt.mat", {"gt": gt})
    return folder, cube, gt


def _train(folder, out, model, *extra):
    assert main(["train", "--model", model, "--cube", str(folder / "ip.tif"), "--labels", str(folder / "gt.mat"),
                 "--split", "random", "--train-fraction", "0.1", "--seed", "1", "--out", str(out), *extra]) == 0
    return out


@pytest.fixture(scope="module", params=[("rf", ["--set", "model.args.n_estimators=40"]), ("svm", [])],
                ids=["rf", "svm"])
def run(request, scene, tmp_path_factory):
    model, extra = request.param
    return model, _train(scene[0], tmp_path_factory.mktemp(model) / "run", model, *extra)


def _read(path):
    with rasterio.open(path) as src:
        return src.read(1), src.crs, src.transform


def test_train_writes_a_weights_only_spectrum_checkpoint(run, scene):
    model, out = run
    payload = torch.load(out / "model.pt", weights_only=True)
    assert payload["format"] == spectrum.FORMAT and payload["model_name"] == model
    assert payload["estimator"].dtype == torch.uint8 and payload["band_mean"].dtype == torch.float64
    ckpt = spectrum.load(out / "model.pt")
    m = json.loads((out / "metrics.json").read_text())
    assert ckpt.class_ids == m["class_ids"] and ckpt.class_names == m["class_names"]
    assert ckpt.in_bands == scene[1].shape[2] and ckpt.extra["config"]["model"]["name"] == model
    assert ckpt.extra["split"] == "random" and ckpt.extra["seed"] == 1


def test_predict_geotiff_gives_the_run_folder_map(run, scene, tmp_path):
    model, out = run
    folder = scene[0]
    assert main(["predict", str(folder / "ip.tif"), "--checkpoint", str(out / "model.pt"),
                 "--out", str(tmp_path / "map.tif"), "--tile", "32", "--overlap", "8"]) == 0
    pred, crs, transform = _read(tmp_path / "map.tif")
    ref, ref_crs, ref_transform = _read(out / "classmap.tif")
    assert np.array_equal(pred, ref), f"{int((pred != ref).sum())} pixels differ"
    assert crs == ref_crs and transform == ref_transform
    assert len(np.unique(ref)) > 5


def test_predict_whole_mat_cube_gives_the_run_folder_map(run, scene, tmp_path):
    model, out = run
    assert main(["predict", str(scene[0] / "ip.mat"), "--checkpoint", str(out / "model.pt"),
                 "--out", str(tmp_path / "map.tif")]) == 0
    assert np.array_equal(_read(tmp_path / "map.tif")[0], _read(out / "classmap.tif")[0])


def test_evaluate_reproduces_the_metrics(run, tmp_path, capsys):
    model, out = run
    assert main(["evaluate", "--checkpoint", str(out / "model.pt"), "--out", str(tmp_path / "ev.json")]) == 0
    ev = json.loads((tmp_path / "ev.json").read_text())
    m = json.loads((out / "metrics.json").read_text())
    assert ev["OA"] == m["OA"] and ev["kappa"] == m["kappa"] and ev["num_samples"] == m["num_samples"]
    assert ev["confusion_matrix"] == m["confusion_matrix"]
    assert ev["split"]["leakage"] == m["split"]["leakage"]  # the split is rebuilt with the run's patch size
    assert f"OA {m['OA']:.4f}" in capsys.readouterr().out


def test_scores_argmax_is_the_estimators_predict(run, scene):
    model, out = run
    ckpt = spectrum.load(out / "model.pt")
    x = ckpt.normalise(scene[1]).reshape(-1, ckpt.in_bands)[:3000]
    scores = ckpt.model(torch.from_numpy(x)[:, :, None, None])
    assert scores.shape == (3000, len(ckpt.class_ids)) and scores.dtype == torch.float32
    assert np.array_equal(scores.argmax(1).numpy(), ckpt.estimator.predict(x))
    if model == "rf":  # softmax of the scores gives the forest's probabilities back (floored at 1e-7)
        p = scores.softmax(1).numpy()
        assert np.allclose(p, ckpt.estimator.predict_proba(x), atol=1e-5)


def _rewrite(src, dst, **changes):
    payload = torch.load(src, weights_only=True)
    payload.update(changes)
    torch.save(payload, dst)
    return dst


def test_untrusted_and_malformed_estimators_are_refused(run, tmp_path):
    import skops.io as sio
    from sklearn.neighbors import KNeighborsClassifier

    model, out = run
    knn = KNeighborsClassifier(1).fit(np.zeros((2, 3)), [0, 1])  # skops trusts it by default; geolesf does not
    blob = torch.frombuffer(bytearray(sio.dumps(knn)), dtype=torch.uint8)
    bad = _rewrite(out / "model.pt", tmp_path / "knn.pt", estimator=blob)
    with pytest.raises(ModelError, match=r"knn\.pt: the stored estimator names type "
                                         r"'sklearn\.neighbors\._classification\.KNeighborsClassifier'"):
        spectrum.load(bad)
    junk = _rewrite(out / "model.pt", tmp_path / "junk.pt", estimator=torch.zeros(10, dtype=torch.uint8))
    with pytest.raises(ModelError, match=r"junk\.pt: the stored estimator is not a skops file"):
        spectrum.load(junk)
    short = _rewrite(out / "model.pt", tmp_path / "short.pt", band_mean=torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ModelError, match=r"short\.pt: malformed 'geolesf-hsi-spectrum/1' checkpoint"):
        spectrum.load(short)
    assert main(["predict", str(out / "classmap.tif"), "--checkpoint", str(out / "model.pt"),
                 "--out", str(tmp_path / "x.tif")]) == 2  # a 1-band raster: one-line band-count error
    assert not (tmp_path / "x.tif").exists()


def test_geotiff_prediction_never_imports_lightning_and_writes_probabilities(run, scene, tmp_path):
    from tests.test_predict_path import _predict_in_fresh_interpreter

    model, out = run
    folder, cube, _ = scene
    res = _predict_in_fresh_interpreter([str(folder / "ip.tif"), "--checkpoint", str(out / "model.pt"),
                                         "--out", str(tmp_path / "map.tif"), "--probabilities",
                                         str(tmp_path / "p.tif"), "--no-preview"])
    assert res == {"rc": 0, "lightning": False, "train": []}
    with rasterio.open(tmp_path / "p.tif") as src:
        probs = src.read()
    ckpt = spectrum.load(out / "model.pt")
    x = ckpt.normalise(cube).reshape(-1, ckpt.in_bands)
    flat = probs.reshape(probs.shape[0], -1).T
    ids = np.asarray(ckpt.class_ids)
    assert np.array_equal(ids[flat.argmax(1)], _read(out / "classmap.tif")[0].ravel())
    expected = np.zeros_like(flat)
    if model == "rf":  # the forest's own class probabilities
        expected[:, ckpt.model.classes] = ckpt.estimator.predict_proba(x)
    else:  # no predict_proba: one-hot of predict
        expected[np.arange(len(x)), ckpt.estimator.predict(x)] = 1.0
    assert np.allclose(flat, expected, atol=2e-6)
