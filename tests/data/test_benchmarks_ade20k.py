"""ADE20K loaders: the real full-format samples and a SceneParsing layout derived from them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from geolesf.data.benchmarks.ade20k import (
    ADE150_CLASSES,
    ADE20KFull,
    ADE20KSceneParsing,
    decode_ade_seg,
    open_ade20k,
)
from geolesf.errors import DataError


@pytest.fixture(scope="module")
def full(shared_data):
    return ADE20KFull(shared_data / "ade20k_samples")


@pytest.mark.shared_data("ade20k_samples")
def test_every_full_format_sample_parses(full, shared_data):
    folder = shared_data / "ade20k_samples"
    assert len(full) == len(list(folder.glob("*_seg.png"))) == 3
    n_parts = 0
    for s in full:
        h, w = s["image"].shape[:2]
        assert s["class_map"].shape == s["mask"].shape == s["instance_map"].shape == (h, w)
        ann = json.loads((folder / f"{s['name']}.json").read_text(encoding="latin-1"))["annotation"]
        assert ann["imsize"][:2] == [h, w]
        whole = {o["name_ndx"] for o in ann["object"] if o["parts"]["part_level"] == 0}
        present = set(np.unique(s["class_map"]).tolist()) - {0}
        assert present <= whole and len(present) > 5
        n_parts += len(s["parts"])
        for part in s["parts"].values():
            assert part.shape == (h, w)
        # street scenes: road, building and sky/tree classes map into the ADE-150 vocabulary
        names = {ADE150_CLASSES[k] for k in np.unique(s["mask"]) if k != 255}
        assert {"road", "building", "tree"} <= names
        # the 150-class mask agrees with the raw map where a class was mapped
        car = s["class_map"] == 401  # "car, auto, automobile, machine, motorcar"
        assert (s["mask"][car] == ADE150_CLASSES.index("car")).all()
    assert n_parts == len(list(folder.glob("*_parts_*.png"))) == 4


def test_decode_seg_encoding():
    rgb = np.zeros((1, 3, 3), dtype=np.uint8)
    rgb[0, 0] = (10, 56, 7)   # 1·256 + 56 = 312
    rgb[0, 1] = (0, 64, 9)
    classes, inst = decode_ade_seg(rgb)
    assert classes.tolist() == [[312, 64, 0]] and len(np.unique(inst)) == 3


@pytest.mark.shared_data("ade20k_samples")
def test_full_vocabulary(shared_data):
    ds = ADE20KFull(shared_data / "ade20k_samples", vocabulary="full")
    s = ds[0]
    assert ds.ignore_index == 65535
    assert np.array_equal(s["mask"] + 1, np.where(s["class_map"] == 0, 65536, s["class_map"]))


@pytest.mark.shared_data("ade20k_samples")
def test_sceneparsing_layout(tmp_path, full):
    img_dir = tmp_path / "ADEChallengeData2016" / "images" / "validation"
    ann_dir = tmp_path / "ADEChallengeData2016" / "annotations" / "validation"
    img_dir.mkdir(parents=True)
    ann_dir.mkdir(parents=True)
    s = full[2]
    img = s["image"][::8, ::8]
    m = s["mask"][::8, ::8]
    Image.fromarray(img).save(img_dir / "ADE_val_00000001.jpg")
    Image.fromarray(np.where(m == 255, 0, m + 1).astype(np.uint8)).save(ann_dir / "ADE_val_00000001.png")
    ds = open_ade20k(tmp_path)
    assert isinstance(ds, ADE20KSceneParsing) and len(ds) == 1
    out = ds[0]
    assert np.array_equal(out["mask"], m) and out["image"].shape == img.shape
    Image.fromarray(np.full((4, 4), 200, dtype=np.uint8)).save(ann_dir / "ADE_val_00000002.png")
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(img_dir / "ADE_val_00000002.jpg")
    with pytest.raises(DataError, match="outside 0..150"):
        ADE20KSceneParsing(tmp_path)[1]
