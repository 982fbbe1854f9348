"""``geolesf pseudo-label``: georeferenced seeds + ignore value + confidence band through the tiled predictor."""

from __future__ import annotations

import json

import numpy as np
import pytest

from geolesf.cli.main import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, shared_data):
    from tests.checkpoints import tiny_wsss_checkpoint

    return tiny_wsss_checkpoint(tmp_path_factory.mktemp("wsss_cli"), shared_data / "rs_seg_tiles")


@pytest.fixture(scope="module")
def scene(tmp_path_factory, shared_data):
    """A 320×256 crop of the real Landsat 7 scene, with its nodata collar in the corner."""
    import rasterio
    from rasterio.windows import Window

    src_path = shared_data / "rasterio_landsat7" / "RGB.byte.tif"
    out = tmp_path_factory.mktemp("scene") / "crop.tif"
    with rasterio.open(src_path) as src:
        win = Window(0, 0, 320, 256)
        profile = src.profile | {"width": 320, "height": 256, "transform": src.window_transform(win)}
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read(window=win))
    return out


@pytest.mark.shared_data("rs_seg_tiles")
def test_pseudo_label_writes_a_georeferenced_geotiff(checkpoint, scene, tmp_path, capsys):
    import rasterio

    out = tmp_path / "pseudo.tif"
    code = main(["pseudo-label", str(scene), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--tile", "128", "--overlap", "32", "--margin", "0.1"])
    assert code == 0
    assert f"wrote {out}" in capsys.readouterr().out
    with rasterio.open(scene) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs and dst.transform == src.transform
        assert (dst.width, dst.height, dst.count) == (src.width, src.height, 2)
        assert dst.dtypes == ("uint8", "uint8") and dst.nodata == 255
        assert dst.descriptions == ("pseudo_label", "confidence")
        assert dst.scales[1] == pytest.approx(1 / 254)
        label, conf = dst.read(1), dst.read(2)
        invalid = src.dataset_mask() == 0
        tags = dst.tags()
    assert invalid.any() and not invalid.all()
    assert (label[invalid] == 255).all() and (conf[invalid] == 255).all()
    assert set(np.unique(label).tolist()) <= {1, 2, 3, 4, 5, 6, 7, 255}
    valid = ~invalid
    assert (label[valid] != 255).any(), "some pixels get a class"
    # the ignore value marks exactly the valid pixels whose margin is below 0.1 (confidence × 254)
    uncertain = valid & (label == 255)
    assert (conf[uncertain] <= round(0.1 * 254)).all()
    assert (conf[valid & (label != 255)] >= round(0.1 * 254) - 1).all()
    assert json.loads(tags["CLASS_NAMES"])["2"] == "building"
    assert tags["IGNORE_VALUE"] == "255" and tags["STAGE"] == "seeds"
    assert not list(tmp_path.glob(".*")), "no partial outputs left beside the result"


@pytest.mark.shared_data("rs_seg_tiles")
def test_fixed_tags_restrict_the_classes(checkpoint, scene, tmp_path):
    import rasterio

    out = tmp_path / "water_forest.tif"
    assert main(["pseudo-label", str(scene), "--checkpoint", str(checkpoint), "--out", str(out), "--tile", "128",
                 "--tags", "water,forest", "--margin", "0"]) == 0
    with rasterio.open(out) as dst:
        label = dst.read(1)
        mask = dst.dataset_mask()
    assert set(np.unique(label[mask > 0]).tolist()) <= {4, 6}


@pytest.mark.shared_data("rs_seg_tiles")
def test_user_errors_exit_2_without_output(checkpoint, scene, tmp_path, capsys):
    cases = [
        (["--ignore-value", "3"], "class id"),
        (["--tags", "glacier"], "glacier"),
        (["--scales", "1,x"], "--scales"),
        (["--stage", "final"], "single-stage"),
    ]
    for extra, needle in cases:
        out = tmp_path / "x.tif"
        code = main(["pseudo-label", str(scene), "--checkpoint", str(checkpoint), "--out", str(out), "--tile", "128",
                     *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, extra
        assert err[-1].startswith("error: ") and needle in err[-1]
        assert not out.exists() and not list(tmp_path.glob(".*"))
    assert main(["pseudo-label", str(scene), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "x.png")]) == 2


@pytest.mark.shared_data("rs_seg_tiles")
def test_pseudo_label_creates_its_output_folder(checkpoint, scene, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["pseudo-label", str(scene), "--checkpoint", str(checkpoint), "--out", "new/sub/pseudo.tif",
                 "--tile", "128"]) == 0
    assert (tmp_path / "new" / "sub" / "pseudo.tif").is_file()
    # fails after the folder was made (no such checkpoint): the new folder is removed again
    assert main(["pseudo-label", str(scene), "--checkpoint", "missing.pt", "--out", "gone/pseudo.tif"]) == 2
    assert not (tmp_path / "gone").exists()
