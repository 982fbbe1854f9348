"""WSSS datasets on the real samples: COCO masks (pycocotools), aerial tag tiles, VOC tags."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geolesf.errors import ConfigError, DataError
from geolesf.methods.wsss.data import TrainCrops, open_dataset


@pytest.mark.shared_data("coco_samples")
def test_coco_semantic_masks_match_the_instance_annotations(shared_data):
    from pycocotools.coco import COCO

    from geolesf.data.benchmarks.coco_seg import COCOSegmentation

    root = shared_data / "coco_samples"
    ds = COCOSegmentation(root, annotation_file=root / "test_coco.json")
    assert len(ds) == 4 and ds.class_names == ("background", "person")
    coco = COCO(str(root / "test_coco.json"))
    for i, image_id in enumerate(ds.image_ids):
        s = ds[i]
        union = np.zeros(s["mask"].shape, dtype=bool)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id)):
            union |= coco.annToMask(ann).astype(bool)
        assert s["image"].shape[:2] == s["mask"].shape
        assert np.array_equal(s["mask"] == 1, union)
        assert set(np.unique(s["mask"]).tolist()) <= {0, 1}
        assert s["labels"].tolist() == [1.0]
    wd = open_dataset("coco2017", root, "val")
    assert wd.background and wd.fg_names == ["person"] and wd.class_ids == [0, 1]


@pytest.mark.shared_data("rs_seg_tiles")
def test_aerial_tiles_tags_equal_the_classes_in_each_crop(shared_data):
    from PIL import Image

    ds = open_dataset("loveda", shared_data / "rs_seg_tiles", tile=128, downsample=4, min_fraction=0.0)
    assert not ds.background and ds.class_ids == [1, 2, 3, 4, 5, 6, 7] and len(ds) == 3 * 4
    ann = np.array(Image.open(shared_data / "rs_seg_tiles" / "loveda" / "ann" / "1.png"))[::4, ::4]
    s = next(x for x in (ds[i] for i in range(len(ds))) if x["name"] == "1_512_0")
    crop = ann[128:256, 0:128]
    assert np.array_equal(s["mask"], np.where(crop == 0, 255, crop.astype(np.int64) - 1))
    present = sorted(set(np.unique(crop).tolist()) - {0})
    assert [ds.class_ids[k] for k in np.flatnonzero(s["labels"])] == present
    pots = open_dataset("potsdam", shared_data / "rs_seg_tiles", tile=256)
    assert len(pots) == 4 and pots.class_ids == [1, 2, 3, 4, 5, 6]
    # ISPRS: 0 is the boundary band of the eroded labels (ignored), 2 building (the red roofs)
    ann = np.array(Image.open(shared_data / "rs_seg_tiles" / "potsdam" / "ann" / "2_10_0_0_512_512.png"))
    s = next(x for x in pots if x["name"] == "2_10_0_0_512_512_256_0")
    crop = ann[256:512, 0:256]
    assert np.array_equal(s["mask"] == 255, crop == 0) and (s["mask"] == 255).any()
    assert pots.class_names[1] == "building" and np.array_equal(s["mask"] == 1, crop == 2)
    img = np.array(Image.open(shared_data / "rs_seg_tiles" / "potsdam" / "img" / "2_10_0_0_512_512.png"))[256:, :256]
    roof = img[crop == 2].astype(float).mean(0)
    assert roof[0] > roof[2] + 40  # the building class is the red-tiled roofs, not the grey street


@pytest.mark.shared_data("rs_seg_tiles")
def test_aerial_tags_file_replaces_derived_tags(tmp_path, shared_data):
    csv = tmp_path / "tags.csv"
    rows = [f"2_10_0_0_512_512_{r}_{c},building" for r in (0, 256) for c in (0, 256)]
    csv.write_text("tile,classes\n" + "\n".join(rows) + "\n")
    ds = open_dataset("potsdam", shared_data / "rs_seg_tiles", tile=256, tags_file=str(csv))
    assert all(s["labels"].tolist() == [0, 1, 0, 0, 0, 0] for s in ds)
    csv.write_text("tile,classes\nother,building\n")
    with pytest.raises(DataError, match="no tags for tile"):
        open_dataset("potsdam", shared_data / "rs_seg_tiles", tile=256, tags_file=str(csv))


@pytest.mark.shared_data("voc_samples")
def test_voc_samples_tags_and_training_crops(shared_data):
    ds = open_dataset("voc2012", shared_data / "voc_samples" / "deeplabv3plus_val", "val")
    assert len(ds) == 3 and ds.background and len(ds.fg_names) == 20
    for s in ds:
        present = sorted(set(np.unique(s["mask"]).tolist()) - {0, 255})
        assert (np.flatnonzero(s["labels"]) + 1).tolist() == present
    crops = TrainCrops(ds, 96, (0.5, 0.5), seed=0)
    x, y = crops[0]
    assert x.shape == (3, 96, 96) and y.shape == (20,) and torch.isfinite(x).all()
    with pytest.raises(ConfigError, match="do not apply"):
        open_dataset("voc2012", shared_data / "voc_samples" / "deeplabv3plus_val", tile=3)
