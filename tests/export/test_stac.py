"""STAC Items beside class maps: content read back from the map, offline validation, ``--stac`` flag."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from geolesf.errors import DataError
from geolesf.export.stac import (
    CLASSIFICATION,
    PROJECTION,
    stac_item,
    validate_item,
    write_stac_item,
)


@pytest.fixture(scope="module")
def crop(shared_data: Path, tmp_path_factory) -> Path:
    """A 96×120 crop of the real Landsat scene (EPSG:32618, nodata collar) as its own GeoTIFF."""
    from rasterio.windows import Window

    src_path = shared_data / "rasterio_landsat7" / "RGB.byte.tif"
    out = tmp_path_factory.mktemp("stac") / "crop.tif"
    with rasterio.open(src_path) as src:
        win = Window(40, 0, 120, 96)
        profile = src.profile | {"height": 96, "width": 120, "transform": src.window_transform(win)}
        profile.pop("blockxsize", None), profile.pop("blockysize", None)
        profile["tiled"] = False
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read(window=win))
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from geolesf.methods.unet.checkpoint import SegmentationCheckpoint
    from geolesf.methods.unet.checkpoint import save as save_segmentation_checkpoint
    from geolesf.methods.unet.model import unet

    torch.manual_seed(0)
    net = unet(in_chans=3, num_classes=3, base=4, depth=2)
    path = tmp_path_factory.mktemp("ck") / "model.pt"
    save_segmentation_checkpoint(path, SegmentationCheckpoint(
        model=net, model_name="unet", model_args={"in_chans": 3, "num_classes": 3, "base": 4, "depth": 2},
        band_mean=np.array([60.0, 60.0, 60.0]), band_std=np.array([50.0, 50.0, 50.0]), class_ids=[1, 2, 3],
        class_names=["water", "bare soil", "forest"], colors=["#1f78b4", "#b15928", "#33a02c"]))
    return path


@pytest.fixture(scope="module")
def classmap(crop, checkpoint, tmp_path_factory) -> Path:
    from geolesf.predict.tiled import predict_raster

    out = tmp_path_factory.mktemp("map") / "landcover.tif"
    predict_raster(crop, checkpoint, out, tile=64, overlap=16, progress=False,
                   probabilities=out.with_name("probs.tif"))
    return out


def test_item_describes_the_map(classmap, checkpoint):
    from rasterio.warp import transform_bounds

    from geolesf.registry import sha256_file

    path = write_stac_item(classmap, probabilities=classmap.with_name("probs.tif"))
    assert path == classmap.with_name("landcover.stac.json")
    d = json.loads(path.read_text())
    assert set(d["stac_extensions"]) == {PROJECTION, CLASSIFICATION}
    props = d["properties"]
    with rasterio.open(classmap) as src:
        tags, transform, crs, shape, bounds = src.tags(), src.transform, src.crs, (src.height, src.width), src.bounds
        nodata = src.nodata
    assert props["proj:code"] == f"EPSG:{crs.to_epsg()}" == "EPSG:32618" and "proj:epsg" not in props
    assert props["proj:shape"] == list(shape)
    assert props["proj:transform"] == list(transform)[:6]
    assert props["proj:bbox"] == list(bounds)
    west, south, east, north = transform_bounds(crs, "EPSG:4326", *bounds)
    assert d["bbox"][0] <= west + 1e-6 and d["bbox"][2] >= east - 1e-6
    assert d["bbox"][1] <= south + 1e-6 and d["bbox"][3] >= north - 1e-6
    # provenance, from the map's tags
    assert props["geolesf:model"] == "unet"
    assert props["geolesf:weights_sha256"] == tags["weights_sha256"] == sha256_file(checkpoint)
    assert props["geolesf:tile"] == 64 and props["geolesf:overlap"] == 16 and props["geolesf:blend"] == "cosine"
    assert props["geolesf:version"] == tags["geolesf_version"] and props["geolesf:nodata"] == nodata
    # classes with names and colours
    classes = d["assets"]["classmap"]["classification:classes"]
    assert [c["value"] for c in classes] == [1, 2, 3]
    assert [c["description"] for c in classes] == ["water", "bare soil", "forest"]
    assert classes[1]["name"] == "bare_soil" and classes[0]["color_hint"] == "1F78B4"
    assert d["assets"]["classmap"]["type"].endswith("profile=cloud-optimized")
    # hrefs are relative and resolve to the files beside the item
    for key in ("classmap", "style", "probabilities"):
        assert (path.parent / d["assets"][key]["href"]).is_file(), key
    assert validate_item(path) == [
        "https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/item.json", PROJECTION, CLASSIFICATION]


def test_plain_pystac_reads_and_validates_offline(classmap, monkeypatch):
    """pystac's own reader keeps the Item as written (no migration) and validates it with no network."""
    import pystac
    import pystac.validation

    from geolesf.export.stac import use_offline_schemas

    path = write_stac_item(classmap, classmap.with_name("plain.stac.json"))
    written = json.loads(path.read_text())

    from pystac.stac_io import DefaultStacIO

    read_local = DefaultStacIO.read_text_from_href

    def no_network(self, href):  # a schema fetch would read an https:// href here
        if str(href).startswith(("http://", "https://")):
            raise AssertionError(f"network access to {href}")
        return read_local(self, href)

    monkeypatch.setattr(DefaultStacIO, "read_text_from_href", no_network)
    monkeypatch.setattr(pystac.validation.RegisteredValidator, "_validator", None)
    use_offline_schemas()
    item = pystac.Item.from_file(str(path))
    assert item.stac_extensions == written["stac_extensions"] == [PROJECTION, CLASSIFICATION]
    assert item.to_dict(include_self_link=False, transform_hrefs=False)["properties"] == written["properties"]
    assert PROJECTION in item.validate() and CLASSIFICATION in item.validate()
    monkeypatch.setattr(pystac.validation.RegisteredValidator, "_validator", None)


def test_acquisition_datetime(crop, checkpoint, tmp_path):
    """TIFFTAG_DATETIME of the source scene becomes the Item's datetime; without it, processing time."""
    from geolesf.predict.tiled import predict_raster

    dated = tmp_path / "dated.tif"
    with rasterio.open(crop) as src:
        profile, data = src.profile, src.read()
    with rasterio.open(dated, "w", **profile) as dst:
        dst.write(data)
        dst.update_tags(TIFFTAG_DATETIME="1999:07:03 15:20:01")
    out = tmp_path / "dated_map.tif"
    predict_raster(dated, checkpoint, out, tile=64, overlap=16, progress=False)
    props = json.loads(write_stac_item(out).read_text())["properties"]
    assert props["datetime"] == "1999-07-03T15:20:01Z" and props["geolesf:datetime_is"] == "acquisition"
    assert props["created"] != props["datetime"]
    out2 = tmp_path / "undated_map.tif"
    predict_raster(crop, checkpoint, out2, tile=64, overlap=16, progress=False)
    props = json.loads(write_stac_item(out2).read_text())["properties"]
    assert props["datetime"] == props["created"] and props["geolesf:datetime_is"] == "processing"


def test_validation_catches_bad_items(classmap, tmp_path):
    good = stac_item(classmap).to_dict(include_self_link=False, transform_hrefs=False)
    cases = {
        "color": lambda d: d["assets"]["classmap"]["classification:classes"][0].update({"color_hint": "#1f78b4"}),
        "shape": lambda d: d["properties"].update({"proj:shape": [96]}),
        "code": lambda d: d["properties"].update({"proj:code": 32618}),
        "name": lambda d: d["assets"]["classmap"]["classification:classes"][1].update({"name": "bare soil"}),
        "datetime": lambda d: d["properties"].pop("datetime"),
    }
    for name, spoil in cases.items():
        bad = json.loads(json.dumps(good))
        spoil(bad)
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(bad))
        with pytest.raises(DataError, match="invalid"):
            validate_item(path)
    unknown = json.loads(json.dumps(good))
    unknown["stac_extensions"].append("https://stac-extensions.github.io/eo/v1.1.0/schema.json")
    (tmp_path / "eo.json").write_text(json.dumps(unknown))
    with pytest.raises(Exception, match="not available offline"):
        validate_item(tmp_path / "eo.json")


def test_map_without_crs(tmp_path):
    from geolesf.io.hsi import read_labels
    from geolesf.io.writers import write_class_map

    gt = read_labels(Path(__file__).parents[2] / "geolesf/embedded/indian_pines/Indian_pines_gt.mat")
    out = tmp_path / "gt.tif"
    with pytest.warns(UserWarning, match="no CRS"):
        write_class_map(out, gt.data, {0: "unlabelled", **{i: f"class {i}" for i in range(1, 17)}}, nodata=0)
    d = json.loads(write_stac_item(out).read_text())
    assert d["geometry"] is None and "bbox" not in d
    assert d["properties"]["proj:code"] is None and d["properties"]["proj:shape"] == [145, 145]
    assert "proj:bbox" not in d["properties"] and d["properties"]["geolesf:nodata"] == 0
    values = [c["value"] for c in d["assets"]["classmap"]["classification:classes"]]
    assert values == list(range(1, 17))  # nodata 0 is not a class


def test_refuses_non_class_maps(crop, tmp_path):
    with pytest.raises(DataError, match="CLASS_NAMES|class map"):
        write_stac_item(crop, tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def test_cli_stac_flag(crop, checkpoint, tmp_path, capsys):
    from geolesf.cli.main import main

    out = tmp_path / "map.tif"
    code = main(["predict", str(crop), "--checkpoint", str(checkpoint), "--out", str(out), "--tile", "64",
                 "--overlap", "16", "--no-preview", "--stac"])
    assert code == 0
    item = out.with_name("map.stac.json")
    assert f"wrote {item}" in capsys.readouterr().out
    assert len(validate_item(item)) == 3
    assert json.loads(item.read_text())["properties"]["geolesf:model"] == "unet"
