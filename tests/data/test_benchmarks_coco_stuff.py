"""COCO-Stuff-171 loader: stuffthingmaps built from the real COCO sample annotations (pycocotools)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from geolesf.data.benchmarks.coco_stuff import (
    COCO_STUFF_CLASSES,
    COCO_STUFF_IDS,
    COCOStuff,
    instances_to_stuffthing,
    stuffthing_to_contiguous,
)
from geolesf.errors import DataError


def test_id_mapping():
    assert len(COCO_STUFF_CLASSES) == 171 and COCO_STUFF_IDS[0] == 1 and COCO_STUFF_IDS[-1] == 182
    raw = np.array([[0, 12, 91, 181, 255, 11]])  # person, stop sign(id 13), banner(92), wood(182), void, unused id 12
    assert stuffthing_to_contiguous(raw).tolist() == [[0, 11, 80, 170, 255, 255]]
    assert COCO_STUFF_CLASSES[11] == "stop sign" and COCO_STUFF_CLASSES[80] == "banner"


@pytest.mark.shared_data("coco_samples")
def test_loader_on_real_coco_annotations(tmp_path, shared_data):
    from pycocotools.coco import COCO

    coco = COCO(str(shared_data / "coco_samples" / "test_coco.json"))
    (tmp_path / "images" / "val2017").mkdir(parents=True)
    (tmp_path / "annotations" / "val2017").mkdir(parents=True)
    for image_id, info in coco.imgs.items():
        stem = info["file_name"].rsplit(".", 1)[0]
        (tmp_path / "images" / "val2017" / info["file_name"]).write_bytes(
            (shared_data / "coco_samples" / info["file_name"]).read_bytes())
        Image.fromarray(instances_to_stuffthing(coco, image_id)).save(tmp_path / "annotations" / "val2017" / f"{stem}.png")
    ds = COCOStuff(tmp_path)
    assert len(ds) == 4
    people = 0
    for s in ds:
        assert s["image"].dtype == np.uint8 and s["mask"].shape == s["image"].shape[:2]
        assert set(np.unique(s["mask"]).tolist()) <= {0, 255}
        people += int((s["mask"] == 0).sum())
    assert people > 10000
    Image.fromarray(np.full(ds[0]["mask"].shape, 11, dtype=np.uint8)).save(
        tmp_path / "annotations" / "val2017" / f"{ds.items[0]}.png")
    with pytest.raises(DataError, match="not a COCO-Stuff id"):
        ds[0]
