"""ONNX export of S²Mamba as a per-pixel classifier (the shipped Indian Pines checkpoint): the selective scans
unrolled (``unrolled`` backend), parity with PyTorch on real patches, and the same class map from
``geolesf predict --engine onnxruntime`` as from PyTorch on a real crop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="the 'onnx' extra (in 'dev') is not installed")
ort = pytest.importorskip("onnxruntime", reason="the 'onnx' extra (in 'dev') is not installed")

from geolesf.cli.main import main  # noqa: E402

CKPT = "s2mamba:indian_pines_dase"


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, object]:
    from geolesf.export.onnx import export_onnx

    result = export_onnx(CKPT, tmp_path_factory.mktemp("onnx") / "s2mamba.onnx")
    return result.out, result


@pytest.fixture(scope="module")
def ip_crop(tmp_path_factory) -> Path:
    """An 8×8 crop of the real Indian Pines cube (200 bands) as a georeferenced GeoTIFF."""
    from tests.scenes import write_scene

    return write_scene(tmp_path_factory.mktemp("scene") / "ip.tif", slice(60, 68), slice(74, 82))


def test_graph_is_plain_ops_with_dynamic_batch(exported):
    path, result = exported
    model = onnx.load(str(path))
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"Loop", "Scan", "If"}  # the recurrence is unrolled: 49 PCS + 128 BSS steps
    assert result.nodes == len(model.graph.node) > 1000
    dims = [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 200, 7, 7]
    meta = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert meta["geolesf_kind"] == "pixel" and meta["geolesf_patch_size"] == 7
    assert meta["geolesf_class_ids"] == list(range(1, 17))
    assert meta["geolesf_normalisation"]["kind"] == "spectra"
    assert "model_type" not in meta  # Deepness has no per-pixel patch classifier type: no Segmentor keys


def test_parity_on_real_patches(exported):
    """onnxruntime's probabilities equal PyTorch's (C-kernel scan) softmax to 1e-4 on 25 real patches."""
    from geolesf.io.hsi import read_cube
    from geolesf.predict.model import load_predict_model
    from tests.scenes import EMBEDDED

    path, result = exported
    assert result.max_abs_diff <= 1e-4
    pm = load_predict_model(CKPT)
    cube = read_cube(EMBEDDED / "IP_200_M.mat").data[50:61, 50:61].transpose(2, 0, 1)
    x = pm.normalise(cube)
    patches = np.stack([x[:, r:r + 7, c:c + 7] for r in range(0, 5) for c in range(0, 5)])
    with torch.inference_mode():
        ref = pm.module(torch.from_numpy(patches)).softmax(1).numpy()
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": patches})[0]
    assert out.shape == ref.shape == (25, 16)
    assert np.abs(out - ref).max() <= 1e-4


def test_class_map_equals_torch(exported, ip_crop, tmp_path):
    import rasterio

    path, _ = exported
    common = [str(ip_crop), "--no-preview"]
    assert main(["predict", *common, "--checkpoint", CKPT, "--out", str(tmp_path / "t.tif")]) == 0
    assert main(["predict", *common, "--checkpoint", str(path), "--engine", "onnxruntime",
                 "--out", str(tmp_path / "o.tif")]) == 0
    with rasterio.open(tmp_path / "t.tif") as a, rasterio.open(tmp_path / "o.tif") as b:
        ta, tb = a.read(1), b.read(1)
        assert (a.crs, a.transform) == (b.crs, b.transform) and a.colormap(1) == b.colormap(1)
        assert b.tags()["patch_size"] == "7"
    np.testing.assert_array_equal(ta, tb)
    assert len(np.unique(ta)) >= 2


def test_spectrum_models_are_refused(tmp_path, capsys):
    """rf/svm are scikit-learn estimators: a one-line error naming why, and no file."""
    from sklearn.ensemble import RandomForestClassifier

    from geolesf.methods.hsi.spectrum import SpectrumCheckpoint, save
    from geolesf.io.hsi import read_cube
    from geolesf.io.hsi import read_labels
    from tests.scenes import EMBEDDED

    x = read_cube(EMBEDDED / "IP_200_M.mat").data[:30, :30, ::10].reshape(-1, 20).astype(np.float32)
    y = read_labels(EMBEDDED / "Indian_pines_gt.mat").data[:30, :30].ravel()
    rf = RandomForestClassifier(n_estimators=3, random_state=0).fit(x[y > 0], y[y > 0])
    ids = [int(c) for c in rf.classes_]
    save(tmp_path / "rf.pt", SpectrumCheckpoint(
        estimator=rf, model_name="rf", model_args={}, band_mean=None, band_std=None, pca=None, class_ids=ids,
        class_names=[f"c{i}" for i in ids], colors=[[i, i, i] for i in ids], in_chans=20))
    assert main(["export-model", str(tmp_path / "rf.pt"), "--onnx", str(tmp_path / "rf.onnx")]) == 2
    err = capsys.readouterr().err
    assert "scikit-learn estimators" in err and err.count("\n") == 1
    assert not (tmp_path / "rf.onnx").exists()


def test_whole_cube_equals_torch(exported, tmp_path):
    """A .mat cube (classified whole) with --engine onnxruntime: the same class map as PyTorch's."""
    import rasterio
    import scipy.io

    from tests.scenes import EMBEDDED

    path, _ = exported
    cube = scipy.io.loadmat(EMBEDDED / "IP_200_M.mat")["data_M"][90:98, 20:28]
    scipy.io.savemat(tmp_path / "crop.mat", {"X": cube})
    common = [str(tmp_path / "crop.mat"), "--no-preview"]
    assert main(["predict", *common, "--checkpoint", CKPT, "--out", str(tmp_path / "t.tif")]) == 0
    assert main(["predict", *common, "--checkpoint", str(path), "--engine", "onnxruntime",
                 "--out", str(tmp_path / "o.tif")]) == 0
    with rasterio.open(tmp_path / "t.tif") as a, rasterio.open(tmp_path / "o.tif") as b:
        ta, tb = a.read(1), b.read(1)
        assert a.colormap(1) == b.colormap(1) and a.tags()["model"] == b.tags()["model"] == "s2mamba"
    np.testing.assert_array_equal(ta, tb)
    assert len(np.unique(ta)) >= 2
