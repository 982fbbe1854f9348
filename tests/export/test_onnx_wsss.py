"""ONNX export of ``geolesf-wsss/1`` checkpoints: the single-stage segmentation head exports (parity with
PyTorch, Deepness standardisation of the /255 input); CAM seed scores are refused with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="the 'onnx' extra (in 'dev') is not installed")
ort = pytest.importorskip("onnxruntime", reason="the 'onnx' extra (in 'dev') is not installed")

from geolesf.cli.main import main  # noqa: E402

pytestmark = pytest.mark.shared_data("rs_seg_tiles")


@pytest.fixture(scope="module")
def single_stage(shared_data: Path, tmp_path_factory) -> Path:
    from tests.checkpoints import tiny_wsss_checkpoint

    return tiny_wsss_checkpoint(tmp_path_factory.mktemp("ss"), shared_data / "rs_seg_tiles", method="single-stage")


def test_single_stage_head_exports(single_stage, shared_data, tmp_path, capsys):
    import rasterio

    from geolesf.predict.model import load_predict_model

    out = tmp_path / "ss.onnx"
    assert main(["export-model", str(single_stage), "--onnx", str(out), "--option", "stage=final"]) == 0
    assert "dense model" in capsys.readouterr().out
    meta = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props}
    pm = load_predict_model(single_stage, options={"stage": "final"})
    assert meta["geolesf_class_names"] == pm.class_names and meta["model_type"] == "Segmentor"
    # WSSS normalises (x / 255 - mean) / std: Deepness's own /255 then the ImageNet-style statistics as they are
    assert meta["standardization_mean"] == pytest.approx(meta["geolesf_normalisation"]["band_mean"])
    tile = shared_data / "rs_seg_tiles" / "loveda" / "img" / "0.png"
    with rasterio.open(tile) as src:
        x = pm.normalise(src.read()[:3, :128, :128])[None]
    with torch.inference_mode():
        ref = pm.module(torch.from_numpy(x)).softmax(1).numpy()
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert np.abs(got - ref).max() <= 1e-4


def test_cam_seed_scores_are_refused(single_stage, tmp_path, capsys):
    out = tmp_path / "seeds.onnx"
    assert main(["export-model", str(single_stage), "--onnx", str(out), "--option", "stage=seeds"]) == 2
    err = capsys.readouterr().err
    assert "only the single-stage segmentation head exports" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
