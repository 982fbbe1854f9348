"""classification_metrics equals scikit-learn to 1e-9."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from geolesf.errors import DataError
from geolesf.metrics.classification import classification_metrics


def _compare(y_true, y_pred, c):
    m = classification_metrics(y_true, y_pred, c)
    labels = list(range(c))
    assert m["OA"] == pytest.approx(skm.accuracy_score(y_true, y_pred), abs=1e-9)
    assert m["kappa"] == pytest.approx(skm.cohen_kappa_score(y_true, y_pred), abs=1e-9)
    assert np.array_equal(m["confusion_matrix"], skm.confusion_matrix(y_true, y_pred, labels=labels))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert m["AA"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred), abs=1e-9)
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    iou = skm.jaccard_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    present = set(np.unique(np.concatenate([y_true, y_pred])))
    for i, e in enumerate(m["per_class"]):
        assert e["support"] == s[i]
        if s[i]:
            assert e["recall"] == pytest.approx(r[i], abs=1e-9) and e["accuracy"] == e["recall"]
            assert e["precision"] == pytest.approx(p[i], abs=1e-9)
        if i in present:
            assert e["F1"] == pytest.approx(f[i], abs=1e-9)
            assert e["IoU"] == pytest.approx(iou[i], abs=1e-9)
    union = [i for i in range(c) if i in present]
    assert m["macro_IoU"] == pytest.approx(np.mean(iou[union]), abs=1e-9)
    return m


@pytest.mark.parametrize("seed", range(5))
def test_random_labels(seed):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(2, 12))
    y_true = rng.integers(0, c, 500)
    y_pred = np.where(rng.random(500) < 0.6, y_true, rng.integers(0, c, 500))
    _compare(y_true, y_pred, c)


def test_absent_classes():
    y_true = np.array([0, 0, 1, 1, 1, 3])
    y_pred = np.array([0, 1, 1, 1, 4, 3])
    m = _compare(y_true, y_pred, 6)
    assert m["per_class"][5]["IoU"] is None and m["per_class"][5]["accuracy"] is None
    assert m["per_class"][4]["accuracy"] is None and m["per_class"][4]["IoU"] == 0.0


def test_real_predictions(shared_data):
    """RF predictions on a real Indian Pines crop, 5 % random split."""
    from sklearn.ensemble import RandomForestClassifier

    from geolesf.data.splits import random_split
    from geolesf.io.hsi import read_cube, read_labels

    cube = read_cube(shared_data / "indian_pines" / "IP_200_M.mat").data[:, :, ::4]
    gt = read_labels(shared_data / "indian_pines" / "Indian_pines_gt.mat").data
    keep = [c for c in range(1, 17) if (gt == c).sum() >= 40]
    gt = np.where(np.isin(gt, keep), gt, 0)
    s = random_split(gt, 0.05, seed=0)
    lut = {c: i for i, c in enumerate(keep)}
    y = np.vectorize(lambda v: lut.get(v, -1))(gt)
    rf = RandomForestClassifier(n_estimators=20, random_state=0, n_jobs=1).fit(cube[s.train], y[s.train])
    m = _compare(y[s.test], rf.predict(cube[s.test]), len(keep))
    assert 0.5 < m["OA"] < 1.0


def test_names_and_errors():
    m = classification_metrics([0, 1], [0, 1], 2, class_names=["a", "b"])
    assert [e["name"] for e in m["per_class"]] == ["a", "b"] and m["kappa"] == 1.0
    with pytest.raises(DataError, match="expected 0..1"):
        classification_metrics([0, 2], [0, 1], 2)
    with pytest.raises(DataError, match="empty test set"):
        classification_metrics([], [], 2)
