from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch

from geolesf import __version__
from geolesf.errors import ConfigError, DataError
from geolesf.predict.model import PredictModel, state_dict_sha256
from geolesf.predict.tiled import predict_raster
from tests.predict.conftest import TinyConv, TinyPatch, whole_scene_probs

NAMES = ["water", "forest", "field", "urban"]
COLOURS = ["#1f78b4", "#33a02c", "#ffff99", "#e31a1c"]


def _run(src, model, out, **kw):
    kw.setdefault("progress", False)
    return predict_raster(src, model, out, **kw)


def test_round_trip_georeferencing_and_metadata(rgb_crop, tiny_conv, tmp_path):
    out = tmp_path / "map.tif"
    res = _run(rgb_crop, tiny_conv, out, tile=128, overlap=32, block=128, class_names=NAMES, colors=COLOURS)
    assert res.out == out and out.is_file()
    with rasterio.open(rgb_crop) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs
        assert dst.transform == src.transform  # bit-exact, not almost-equal
        assert (dst.width, dst.height) == (src.width, src.height)
        assert dst.dtypes[0] == "uint8" and dst.count == 1
        assert dst.nodata == 255  # 0 is a class id, so nodata moves to 255
        cmap = dst.colormap(1)
        assert cmap[0][:3] == (0x1F, 0x78, 0xB4) and cmap[3][:3] == (0xE3, 0x1A, 0x1C)
        tags = dst.tags()
        assert json.loads(tags["CLASS_NAMES"]) == {str(i): n for i, n in enumerate(NAMES)}
        assert dst.descriptions[0] == "0=water; 1=forest; 2=field; 3=urban"
        assert tags["model"] == "TinyConv" and tags["weights_sha256"] == state_dict_sha256(tiny_conv)
        assert (tags["tile"], tags["overlap"], tags["blend"]) == ("128", "32", "cosine")
        assert tags["geolesf_version"] == __version__
        assert dst.profile["tiled"] and dst.block_shapes[0] == (128, 128)
        values = set(np.unique(dst.read(1))) - {255}
        assert values <= {0, 1, 2, 3}
    assert out.with_suffix(".qml").is_file()
    assert not list(tmp_path.glob(".*")), "temporary files left behind"


def test_output_is_a_valid_cog(rgb_byte, tiny_conv, tmp_path):
    from rio_cogeo.cogeo import cog_validate

    out, probs = tmp_path / "map.tif", tmp_path / "probs.tif"
    _run(rgb_byte, tiny_conv, out, tile=256, overlap=32, block=256, probabilities=probs,
         probabilities_dtype="uint8")
    for path in (out, probs):
        valid, errors, _ = cog_validate(str(path))
        assert valid, errors
    with rasterio.open(out) as dst:
        assert dst.overviews(1), "COG without overviews"
    with rasterio.open(probs) as p:
        assert p.count == 4 and p.dtypes[0] == "uint8" and p.nodata == 255
        assert p.scales[0] == pytest.approx(1 / 254)


@pytest.mark.parametrize("blend", ["cosine", "linear", "none"])
@pytest.mark.parametrize("blend_on", ["probabilities", "logits"])
def test_tiled_equals_whole_scene(blend, blend_on, tmp_path):
    """Receptive-field radius 3 ≤ margin (overlap 32 → 8 or 16): seams must vanish exactly."""
    rng = np.random.default_rng(0)
    scene = rng.normal(size=(3, 203, 171)).astype(np.float32)
    model = TinyConv(scale=1.0).eval()
    out, probs = tmp_path / "m.tif", tmp_path / "p.tif"
    with pytest.warns(UserWarning, match="no CRS"):
        _run(scene, model, out, tile=72, overlap=32, blend=blend, blend_on=blend_on, batch_size=3,
             probabilities=probs, block=64)
    ref = whole_scene_probs(model, scene)
    with rasterio.open(probs) as p, rasterio.open(out) as o:
        got = p.read()
        classes = o.read(1)
    np.testing.assert_allclose(got, ref, atol=2e-6)
    np.testing.assert_array_equal(classes, ref.argmax(0))


def test_nodata_collar_of_real_scene(rgb_byte, tmp_path):
    calls = []

    class Counting(TinyConv):
        def forward(self, x):
            calls.append(x.shape[0])
            return super().forward(x)

    model = Counting(scale=1 / 64).eval()
    out = tmp_path / "map.tif"
    res = _run(rgb_byte, model, out, tile=128, overlap=32, block=128, probabilities=tmp_path / "p.tif",
               class_names=NAMES)
    with rasterio.open(rgb_byte) as src, rasterio.open(out) as dst:
        valid = src.dataset_mask() > 0
        classes = dst.read(1)
        assert dst.nodata == 255
    assert (~valid).sum() > 100_000, "expected the real nodata collar"
    np.testing.assert_array_equal(classes == 255, ~valid)
    assert res.tiles_skipped >= 1 and sum(calls) == res.tiles_run
    with rasterio.open(tmp_path / "p.tif") as p:
        probs = p.read()
    assert np.isnan(probs[:, ~valid]).all() and np.isfinite(probs[:, valid]).all()


def test_nodata_override_and_array_source(tmp_path):
    xr = pytest.importorskip("xarray")
    scene = np.full((3, 80, 90), 7, dtype=np.int16)
    scene[:, 20:60, 30:70] = np.arange(40 * 40, dtype=np.int16).reshape(40, 40) % 50
    da = xr.DataArray(scene, dims=("band", "y", "x"))
    out = tmp_path / "m.tif"
    with pytest.warns(UserWarning, match="no CRS"):
        _run(da, TinyConv(scale=1 / 50).eval(), out, tile=32, overlap=8, nodata=7, block=32)
    with rasterio.open(out) as dst:
        classes = dst.read(1)
    inside = np.zeros((80, 90), bool)
    inside[20:60, 30:70] = True
    inside &= ~np.all(scene == 7, axis=0)
    np.testing.assert_array_equal(classes == dst.nodata, ~inside)


def test_per_pixel_patch_model_equals_whole_scene(tmp_path):
    from geolesf.predict.patches import predict_scene

    rng = np.random.default_rng(3)
    cube = rng.normal(size=(5, 45, 38)).astype(np.float32)
    module = TinyPatch(bands=5, patch=5).eval()
    pm = PredictModel(module=module, name="tiny-patch", kind="pixel", class_ids=[1, 2, 3],
                      class_names=["a", "b", "c"], colors=["#ff0000", "#00ff00", "#0000ff"],
                      sha256="x", in_bands=5, patch_size=5, padding="symmetric")
    out = tmp_path / "m.tif"
    with pytest.warns(UserWarning, match="no CRS"):
        _run(cube, pm, out, tile=16, overlap=4, block=16, pixel_batch=100)
    ref = predict_scene(module, cube.transpose(1, 2, 0), 5, "symmetric", batch_size=256, progress=False)
    with rasterio.open(out) as dst:
        np.testing.assert_array_equal(dst.read(1), np.asarray([1, 2, 3])[ref])
        assert dst.tags()["patch_size"] == "5"


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("error", [Interrupt, KeyboardInterrupt])
def test_resume_gives_identical_bytes(rgb_byte, tmp_path, error):
    model = TinyConv(scale=1 / 64).eval()
    opts = dict(tile=128, overlap=32, block=128, checkpoint_every=0)
    ref_out, ref_p = tmp_path / "ref.tif", tmp_path / "ref_p.tif"
    _run(rgb_byte, model, ref_out, probabilities=ref_p, **opts)

    out, probs = tmp_path / "run.tif", tmp_path / "run_p.tif"
    seen = []

    def stop(rows):
        seen.append(rows)
        if len(seen) == 2:
            raise error()

    with pytest.raises(error):
        _run(rgb_byte, model, out, probabilities=probs, on_flush=stop, **opts)
    assert not out.exists() and not probs.exists(), "partial output at the destination"
    assert (tmp_path / ".run.tif.resume.npz").is_file()
    res = _run(rgb_byte, model, out, probabilities=probs, resume=True, **opts)
    assert res.resumed_at_row == seen[-1] > 0
    assert out.read_bytes() == ref_out.read_bytes()
    assert probs.read_bytes() == ref_p.read_bytes()
    assert not list(tmp_path.glob(".*"))


def test_resume_refuses_other_options(rgb_crop, tmp_path):
    model = TinyConv(scale=1 / 64).eval()
    out = tmp_path / "run.tif"

    def stop(rows):
        raise Interrupt()

    with pytest.raises(Interrupt):
        _run(rgb_crop, model, out, tile=64, overlap=16, block=64, checkpoint_every=0, on_flush=stop)
    with pytest.raises(DataError, match="different scene, model or options"):
        _run(rgb_crop, model, out, tile=64, overlap=8, block=64, resume=True)
    assert not out.exists()


def test_bad_inputs_fail_before_any_work(rgb_crop, tmp_path):
    out = tmp_path / "m.tif"
    with pytest.raises(DataError, match="has 3 bands; model TinyConv expects 4"):
        _run(rgb_crop, TinyConv(in_chans=4), out)
    with pytest.raises(DataError, match="scene not found"):
        _run(tmp_path / "missing.tif", TinyConv(), out)
    with pytest.raises(DataError, match="expected a .tif"):
        _run(rgb_crop, TinyConv(), tmp_path / "m.png")
    with pytest.raises(DataError, match="does not exist"):
        _run(rgb_crop, TinyConv(), tmp_path / "nope" / "m.tif")
    with pytest.raises(ConfigError, match="overlap"):
        _run(rgb_crop, TinyConv(), out, tile=64, overlap=40)
    unet = __import__("geolesf.methods.unet.model", fromlist=["unet"]).unet(in_chans=3, num_classes=2, depth=3)
    with pytest.raises(ConfigError, match="multiple of 8"):
        _run(rgb_crop, unet, out, tile=100, overlap=16)
    assert list(tmp_path.iterdir()) == []


def test_scene_smaller_than_tile_with_unet(rgb_crop, tmp_path):
    from geolesf.methods.unet.model import unet

    model = unet(in_chans=3, num_classes=3, base=4, depth=2).eval()
    out = tmp_path / "m.tif"
    res = _run(rgb_crop, model, out, tile=512, overlap=64)
    assert res.tiles == 1
    with rasterio.open(out) as dst:
        assert dst.shape == (300, 260)


def test_train_unet_then_cli_predict(rgb_crop, tmp_path):
    from geolesf.cli.main import main
    from geolesf.methods.unet.checkpoint import load as load_segmentation_checkpoint
    from geolesf.methods.unet.train import train_segmenter

    with rasterio.open(rgb_crop) as src:
        img = src.read()
        profile = src.profile
    labels = np.where(img[2] > np.median(img[2][img[2] > 0]), 2, 1).astype(np.uint8)
    labels[np.all(img == 0, axis=0)] = 0
    label_tif = tmp_path / "labels.tif"
    with rasterio.open(label_tif, "w", **(profile | {"count": 1, "nodata": 0})) as dst:
        dst.write(labels, 1)
    ckpt = tmp_path / "model.pt"
    summary = train_segmenter(rgb_crop, label_tif, ckpt, class_names={1: "dark", 2: "bright"}, epochs=1,
                              steps_per_epoch=2, chip=64, batch_size=2, model_args={"base": 4, "depth": 2})
    assert summary["class_ids"] == [1, 2]
    payload = torch.load(ckpt, weights_only=True)
    assert payload["format"] == "geolesf-segmentation/1"
    assert load_segmentation_checkpoint(ckpt).class_names == ["dark", "bright"]

    out = tmp_path / "landcover.tif"
    code = main(["predict", str(rgb_crop), "--checkpoint", str(ckpt), "--out", str(out), "--tile", "128",
                 "--overlap", "32", "--model", "unet"])
    assert code == 0
    with rasterio.open(out) as dst:
        assert dst.nodata == 0 and json.loads(dst.tags()["CLASS_NAMES"]) == {"1": "dark", "2": "bright"}
        assert set(np.unique(dst.read(1))) <= {0, 1, 2}
    assert out.with_suffix(".png").is_file() and out.with_suffix(".qml").is_file()

    assert main(["predict", str(rgb_crop), "--checkpoint", str(ckpt), "--out", str(tmp_path / "x.tif"),
                 "--model", "s2mamba"]) == 2
    assert not (tmp_path / "x.tif").exists()


def test_package_level_predict_is_the_tiled_predictor(rgb_crop, tiny_conv, tmp_path):
    import geolesf

    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    geolesf.predict(rgb_crop, tiny_conv, a, tile=128, overlap=32, block=128, progress=False)
    _run(rgb_crop, tiny_conv, b, tile=128, overlap=32, block=128)
    with rasterio.open(a) as ra, rasterio.open(b) as rb:
        np.testing.assert_array_equal(ra.read(1), rb.read(1))
        assert ra.crs == rb.crs and ra.transform == rb.transform
