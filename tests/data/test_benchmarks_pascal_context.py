"""PASCAL-Context 59/459 loader on a VOC2010-style layout built from the real VOC sample images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from geolesf.data.benchmarks.pascal_context import PC59_CLASSES, PascalContext
from geolesf.data.benchmarks.registry import open_benchmark
from geolesf.data.benchmarks.voc import VOCSegmentation
from geolesf.errors import DataError


@pytest.fixture()
def layout(tmp_path, shared_data):
    voc = VOCSegmentation(shared_data / "voc_samples" / "deeplabv3plus_val")
    base = tmp_path / "VOC2010"
    for d in ("JPEGImages", "SegmentationClassContext", "ImageSets/SegmentationContext", "trainval"):
        (base / d).mkdir(parents=True)
    names, masks = [], {}
    voc_to_pc = {1: PC59_CLASSES.index("aeroplane") + 1, 17: PC59_CLASSES.index("sheep") + 1,
                 3: PC59_CLASSES.index("bird") + 1, 0: PC59_CLASSES.index("sky") + 1}
    for s in voc:
        name = f"2008_{int(s['name']):06d}"
        names.append(name)
        Image.fromarray(s["image"]).save(base / "JPEGImages" / f"{name}.jpg", quality=95)
        pc = np.zeros_like(s["mask"])
        for v, k in voc_to_pc.items():
            pc[s["mask"] == v] = k
        masks[name] = pc
        Image.fromarray(pc.astype(np.uint8)).save(base / "SegmentationClassContext" / f"{name}.png")
        savemat(base / "trainval" / f"{name}.mat", {"LabelMap": (pc * 7).astype(np.uint16)})
    (base / "ImageSets/SegmentationContext/val.txt").write_text("\n".join(names))
    (base / "labels.txt").write_text("".join(f"{k}: name{k}\n" for k in range(1, 460)))
    return tmp_path, names, masks


@pytest.mark.shared_data("voc_samples")
def test_pc59_and_pc60(layout):
    root, names, masks = layout
    ds = open_benchmark("pascal_context59", root)
    assert ds.num_classes == 59 and len(ds) == 3
    for s in ds:
        raw = masks[s["name"]]
        assert np.array_equal(s["mask"], np.where(raw == 0, 255, raw - 1))
        assert s["image"].shape[:2] == raw.shape
    with_bg = PascalContext(root, classes=59, include_background=True)
    assert with_bg.num_classes == 60 and np.array_equal(with_bg[0]["mask"], masks[names[0]])


@pytest.mark.shared_data("voc_samples")
def test_pc459_from_mat(layout):
    root, names, masks = layout
    ds = open_benchmark("pascal_context459", root)
    assert ds.num_classes == 459 and ds.class_names[0] == "name1" and ds.ignore_index == 65535
    s = ds[0]
    raw = masks[names[0]] * 7
    assert np.array_equal(s["mask"], np.where(raw == 0, 65535, raw - 1))


@pytest.mark.shared_data("voc_samples")
def test_missing_split_is_data_error(layout):
    root, *_ = layout
    with pytest.raises(DataError, match="split list"):
        PascalContext(root, "train")
