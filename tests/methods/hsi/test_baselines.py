"""rf and svm are registered as kind spectrum and fit real spectra."""

from __future__ import annotations

import numpy as np
import pytest

from geolesf import registry


@pytest.fixture(scope="module")
def spectra(shared_data):
    from geolesf.data.splits import random_split
    from geolesf.io.hsi import read_cube, read_labels

    cube = read_cube(shared_data / "indian_pines" / "IP_200_M.mat").data.astype(np.float32)
    gt = read_labels(shared_data / "indian_pines" / "Indian_pines_gt.mat").data
    gt = np.where(np.isin(gt, [2, 11, 14]), gt, 0)  # three large classes keep the test quick
    s = random_split(gt, 0.05, seed=0)
    return cube[s.train], gt[s.train], cube[s.test], gt[s.test]


def test_registered_with_kind():
    assert registry.get_entry("rf").kind == "spectrum"
    assert registry.get_entry("svm").kind == "spectrum"
    rf = registry.create_model("rf", seed=3, in_chans=200, num_classes=16)
    assert rf.n_estimators == 200 and rf.random_state == 3 and rf.n_jobs == -1
    svm = registry.create_model("svm", C=10, gamma=0.01)
    assert svm.steps[0][0] == "standardscaler" and svm.steps[1][1].C == 10 and svm.steps[1][1].gamma == 0.01


@pytest.mark.parametrize("name,args", [("rf", {"n_estimators": 20, "n_jobs": 1}), ("svm", {})])
def test_fit_real_spectra(spectra, name, args):
    x_tr, y_tr, x_te, y_te = spectra
    model = registry.create_model(name, seed=0, **args).fit(x_tr, y_tr)
    acc = float(np.mean(model.predict(x_te) == y_te))
    assert acc > 0.7, f"{name} accuracy {acc:.3f} on three Indian Pines classes"


def test_seeded_rf_is_deterministic(spectra):
    x_tr, y_tr, x_te, _ = spectra
    a = registry.create_model("rf", n_estimators=10, seed=1, n_jobs=1).fit(x_tr, y_tr).predict_proba(x_te)
    b = registry.create_model("rf", n_estimators=10, seed=1, n_jobs=1).fit(x_tr, y_tr).predict_proba(x_te)
    assert np.array_equal(a, b)
