"""ONNX export of unet checkpoints: parity with PyTorch, Deepness metadata key by key, ``--engine onnxruntime``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="the 'onnx' extra (in 'dev') is not installed")
ort = pytest.importorskip("onnxruntime", reason="the 'onnx' extra (in 'dev') is not installed")

from geolesf.cli.main import main  # noqa: E402

#: Deepness's documented metadata keys and their value types (JSON-encoded strings in ``metadata_props``),
#: copied from the table "List of parameters parsed by plugin" of
#: https://github.com/PUTvision/qgis-plugin-deepness/blob/f450c6342d82a200af32022b2d977231d4f71d3c/docs/source/creators/creators_add_metadata_to_model.rst
#: The documented type "dict" of class_names is a JSON object {channel index: name}; "list" is a JSON array
#: of numbers, one per input channel.
DEEPNESS_DOCS = {
    "model_type": str,            # 'Segmentor'
    "class_names": dict,          # {0: 'name1', 1: 'name2'}
    "resolution": float,          # cm per pixel
    "tiles_size": int,            # pixels
    "tiles_overlap": int,         # percent of the tile
    "standardization_mean": list,  # after Deepness's scaling to 0..1
    "standardization_std": list,
    "seg_thresh": float,          # Segmentor: class confidence threshold
    "seg_small_segment": int,     # Segmentor: remove small segments
}
#: Keys of the other model types (Regressor, Detector): a Segmentor export must not carry them.
DEEPNESS_OTHER_TYPES = ("reg_output_scaling", "det_conf", "det_iou_thresh", "det_type")


def _unet_checkpoint(path: Path, encoder: str | None = None) -> Path:
    """A seeded 4-class unet whose head is scaled so that its random logits pick all classes on a real scene."""
    from geolesf.methods.unet.checkpoint import SegmentationCheckpoint, save
    from geolesf.methods.unet.model import unet

    torch.manual_seed(0)
    args = dict(in_chans=3, num_classes=4, base=4, depth=2) if encoder is None else \
        dict(in_chans=3, num_classes=4, encoder=encoder)
    model = unet(**args).eval()
    if encoder is None:
        with torch.no_grad():
            model.head.weight.mul_(40.0)
    save(path, SegmentationCheckpoint(
        model=model, model_name="unet", model_args=args,
        band_mean=np.array([70.0, 60.0, 55.0], np.float32), band_std=np.array([25.0, 22.0, 28.0], np.float32),
        class_ids=[1, 2, 3, 5], class_names=["water", "forest", "field", "urban"],
        colors=["#1f78b4", "#33a02c", "#ffff99", "#e31a1c"], extra={"trained_on": "x.tif", "pixel_size_m": 0.5}))
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path, object]:
    from geolesf.export.onnx import export_onnx

    folder = tmp_path_factory.mktemp("onnx")
    ckpt = _unet_checkpoint(folder / "unet.pt")
    result = export_onnx(ckpt, folder / "unet.onnx", tile=256, overlap=64)
    return ckpt, result.out, result


@pytest.fixture(scope="module")
def rgb_crop(shared_data: Path, tmp_path_factory) -> Path:
    """A 180×200 crop of RGB.byte.tif with its georeference and part of its nodata collar."""
    from rasterio.windows import Window

    from tests.scenes import crop_geotiff

    return crop_geotiff(shared_data / "rasterio_landsat7" / "RGB.byte.tif",
                        tmp_path_factory.mktemp("scene") / "crop.tif", Window(0, 80, 200, 180))


def _metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_unet_parity_on_a_real_crop(exported, rgb_crop):
    """onnxruntime's probabilities equal PyTorch's softmax to 1e-4 on normalised real pixels."""
    import rasterio

    from geolesf.predict.model import load_predict_model

    ckpt, path, result = exported
    assert result.max_abs_diff <= 1e-4
    pm = load_predict_model(ckpt)
    with rasterio.open(rgb_crop) as src:
        x = pm.normalise(src.read(window=((20, 148), (40, 168))))[None]
    with torch.inference_mode():
        ref = pm.module(torch.from_numpy(x)).softmax(1).numpy()
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert out.shape == ref.shape == (1, 4, 128, 128)
    assert np.abs(out - ref).max() <= 1e-4
    assert len(np.unique(ref.argmax(1))) >= 3  # the test model really separates classes here


def test_deepness_metadata_key_by_key(exported):
    """Every documented Segmentor key, with its documented type, parsed the way the plugin parses it."""
    ckpt, path, _ = exported
    meta = _metadata(path)
    for key, kind in DEEPNESS_DOCS.items():
        assert key in meta, key
        value = json.loads(meta[key])  # the plugin json.loads every value
        assert isinstance(value, kind) or (kind is float and isinstance(value, int)), (key, value)
    for key in DEEPNESS_OTHER_TYPES:
        assert key not in meta
    assert json.loads(meta["model_type"]) == "Segmentor"
    names = json.loads(meta["class_names"])  # channel index → name, consecutive from 0 (the plugin checks)
    assert [int(k) for k in sorted(names, key=int)] == [0, 1, 2, 3]
    assert [names[k] for k in sorted(names, key=int)] == ["water", "forest", "field", "urban"]
    assert json.loads(meta["resolution"]) == pytest.approx(50.0)  # 0.5 m from the checkpoint → cm/px
    assert json.loads(meta["tiles_size"]) == json.loads(meta["tile_size"]) == 256
    assert json.loads(meta["tiles_overlap"]) == 25  # 64 px of 256
    assert json.loads(meta["seg_thresh"]) == 0.0 and json.loads(meta["seg_small_segment"]) == 0
    # Deepness feeds uint8 / 255, then (x - mean) / std: that must equal geolesf's (x - m) / s
    mean = np.array(json.loads(meta["standardization_mean"]), np.float32)
    std = np.array(json.loads(meta["standardization_std"]), np.float32)
    values = np.arange(256, dtype=np.float32)[None, :].repeat(3, 0)
    deepness = (values / 255.0 - mean[:, None]) / std[:, None]
    geolesf = (values - np.array([70.0, 60.0, 55.0])[:, None]) / np.array([25.0, 22.0, 28.0])[:, None]
    assert np.abs(deepness - geolesf).max() < 1e-4
    model = onnx.load(str(path))
    shape = [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert shape == ["batch", 3, "height", "width"]  # one NCHW input, the channels fixed
    assert len(model.graph.output) == 1


def test_geolesf_metadata(exported):
    from geolesf.predict.onnx_engine import GEOLESF_KEYS
    from geolesf.registry import sha256_file

    ckpt, path, _ = exported
    meta = {k: json.loads(v) for k, v in _metadata(path).items()}
    assert set(GEOLESF_KEYS) <= set(meta)
    assert meta["geolesf_format"] == "geolesf-onnx/1"
    assert meta["geolesf_source_format"] == "geolesf-segmentation/1"
    assert meta["geolesf_source_sha256"] == sha256_file(ckpt)
    assert meta["geolesf_kind"] == "dense" and meta["geolesf_in_bands"] == 3
    assert meta["geolesf_class_ids"] == [1, 2, 3, 5]
    assert meta["geolesf_colors"] == ["#1f78b4", "#33a02c", "#ffff99", "#e31a1c"]
    assert meta["geolesf_normalisation"]["band_mean"] == [70.0, 60.0, 55.0]


def test_predict_engine_onnxruntime_equals_torch(exported, rgb_crop, tmp_path, capsys):
    """The same tiled predictor with either engine: identical class maps, georeference and styling."""
    import rasterio

    ckpt, path, _ = exported
    common = [str(rgb_crop), "--tile", "64", "--overlap", "16", "--no-preview"]
    assert main(["predict", *common, "--checkpoint", str(ckpt), "--out", str(tmp_path / "t.tif")]) == 0
    assert main(["predict", *common, "--checkpoint", str(path), "--engine", "onnxruntime",
                 "--out", str(tmp_path / "o.tif")]) == 0
    with rasterio.open(tmp_path / "t.tif") as a, rasterio.open(tmp_path / "o.tif") as b:
        ta, tb = a.read(1), b.read(1)
        assert (a.crs, a.transform, a.nodata) == (b.crs, b.transform, b.nodata)
        assert a.colormap(1) == b.colormap(1)
        assert a.tags()["model"] == b.tags()["model"] == "unet"
    np.testing.assert_array_equal(ta, tb)
    assert len(np.unique(ta)) >= 4  # nodata collar + at least 3 classes
    assert (tmp_path / "o.qml").read_text() == (tmp_path / "t.qml").read_text()


def test_engine_and_checkpoint_must_agree(exported, rgb_crop, tmp_path, capsys):
    ckpt, path, _ = exported
    assert main(["predict", str(rgb_crop), "--checkpoint", str(path), "--out", str(tmp_path / "a.tif")]) == 2
    assert "add --engine onnxruntime" in capsys.readouterr().err
    assert main(["predict", str(rgb_crop), "--checkpoint", str(ckpt), "--engine", "onnxruntime",
                 "--out", str(tmp_path / "b.tif")]) == 2
    assert "needs a .onnx model" in capsys.readouterr().err
    assert main(["predict", str(rgb_crop), "--checkpoint", str(path), "--engine", "onnxruntime", "--option",
                 "stage=final", "--out", str(tmp_path / "c.tif")]) == 2
    assert "an exported .onnx takes none" in capsys.readouterr().err
    assert main(["predict", str(rgb_crop), str(rgb_crop), "--checkpoint", str(path), "--engine", "onnxruntime",
                 "--out-dir", str(tmp_path / "maps")]) == 2
    assert "not several scenes" in capsys.readouterr().err
    import scipy.io

    scipy.io.savemat(tmp_path / "cube.mat", {"X": np.zeros((8, 8, 3), np.uint8)})
    assert main(["predict", str(tmp_path / "cube.mat"), "--checkpoint", str(path), "--engine", "onnxruntime",
                 "--out", str(tmp_path / "d.tif")]) == 2
    assert "cubes classified whole need a per-pixel model" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.tif")) and not (tmp_path / "maps").exists()


def test_foreign_onnx_is_refused(tmp_path, rgb_crop, capsys):
    """An .onnx without geolesf metadata: one clear error, no output."""
    foreign = tmp_path / "foreign.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 2, 1), (torch.zeros(1, 3, 8, 8),), str(foreign), dynamo=False)
    assert main(["predict", str(rgb_crop), "--checkpoint", str(foreign), "--engine", "onnxruntime",
                 "--out", str(tmp_path / "c.tif")]) == 2
    err = capsys.readouterr().err
    assert "not an ONNX model exported by geolesf" in err and err.count("\n") == 1
    assert not (tmp_path / "c.tif").exists()


def test_export_cli_messages_and_overwrite(exported, tmp_path, capsys):
    ckpt, _, _ = exported
    out = tmp_path / "m.onnx"
    assert main(["export-model", str(ckpt), "--onnx", str(out), "--resolution", "30"]) == 0
    text = capsys.readouterr().out
    assert "max |Δp|" in text and "resolution 30 cm/px from --resolution" in text
    assert json.loads(_metadata(out)["resolution"]) == 30.0
    before = out.read_bytes()
    assert main(["export-model", str(ckpt), "--onnx", str(out)]) == 2
    assert "exists already" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["export-model", str(ckpt), "--onnx", str(tmp_path / "m.pt")]) == 2
    assert "expected a .onnx path" in capsys.readouterr().err
    assert main(["export-model", str(ckpt), "--onnx", str(tmp_path / "n.onnx"), "--tile", "510"]) == 2
    assert "needs a multiple of 4 (try 508)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary file left


def test_smp_encoder_unet_exports(tmp_path):
    """The smp.Unet back end (resnet18 encoder, random weights) exports too, within the tolerance."""
    pytest.importorskip("segmentation_models_pytorch")
    from geolesf.export.onnx import export_onnx

    res = export_onnx(_unet_checkpoint(tmp_path / "smp.pt", encoder="resnet18"), tmp_path / "smp.onnx")
    assert res.kind == "dense" and res.max_abs_diff <= 1e-4


def test_deepness_preprocessing_reproduces_geolesf(exported, rgb_crop):
    """Deepness's own pipeline (ModelBase.preprocessing at the commit above: keep the model's channels, uint8
    / 255, (x - standardization_mean) / standardization_std, NHWC → NCHW) on a real 8-bit tile gives the
    probabilities geolesf's PyTorch model gives on the same tile."""
    import rasterio

    from geolesf.predict.model import load_predict_model

    ckpt, path, _ = exported
    meta = {k: json.loads(v) for k, v in _metadata(path).items()}
    with rasterio.open(rgb_crop) as src:
        chw = src.read(window=((30, 158), (50, 178)))  # uint8, as Deepness reads the layer
    nhwc = chw.transpose(1, 2, 0)[None]
    x = np.float32(nhwc[..., :3] * 1.0 / 255.0)
    x = (x - np.array(meta["standardization_mean"], np.float32)) / np.array(meta["standardization_std"], np.float32)
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    pm = load_predict_model(ckpt)
    with torch.inference_mode():
        ref = pm.module(torch.from_numpy(pm.normalise(chw)[None])).softmax(1).numpy()
    assert np.abs(got - ref).max() <= 1e-4
    assert (got.argmax(1) == ref.argmax(1)).mean() > 0.999
