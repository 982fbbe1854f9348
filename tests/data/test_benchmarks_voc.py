"""VOC segmentation loader on the real samples (RGB-palette masks) and on a devkit/SBD layout built from them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from geolesf.data.benchmarks.voc import (
    VOC_CLASSES,
    VOC_PALETTE,
    VOCSegmentation,
    decode_palette_mask,
    read_voc_mask,
)
from geolesf.errors import DataError
from geolesf.metrics.segmentation import SegmentationConfusion

EXPECTED = {"1": 1, "23": 17, "114": 3}  # aeroplane, sheep, bird


@pytest.fixture(scope="module")
def flat(shared_data):
    return VOCSegmentation(shared_data / "voc_samples" / "deeplabv3plus_val")


@pytest.mark.shared_data("voc_samples")
def test_every_sample_parses(flat, shared_data):
    targets = sorted((shared_data / "voc_samples" / "deeplabv3plus_val").glob("*_target.png"))
    assert len(flat) == len(targets) == 3
    for s in flat:
        assert s["image"].dtype == np.uint8 and s["image"].shape == (513, 513, 3)
        assert s["mask"].dtype == np.int64 and s["mask"].shape == (513, 513)
        values = set(np.unique(s["mask"]).tolist())
        assert values == {0, EXPECTED[s["name"]], 255}
        # decoding inverts the palette rendering exactly
        rgb = np.array(Image.open(flat.items[[i[0] for i in flat.items].index(s["name"])][2]).convert("RGB"))
        assert np.array_equal(VOC_PALETTE[s["mask"]], rgb)


@pytest.mark.shared_data("voc_samples")
def test_voc20_drops_background(shared_data):
    ds = VOCSegmentation(shared_data / "voc_samples" / "deeplabv3plus_val", include_background=False)
    assert ds.num_classes == 20 and ds.class_names[0] == "aeroplane"
    s = ds[[n for n, *_ in ds.items].index("23")]
    assert set(np.unique(s["mask"]).tolist()) == {16, 255}


def test_palette_and_classes():
    assert len(VOC_CLASSES) == 21 and VOC_PALETTE.shape == (256, 3)
    assert tuple(VOC_PALETTE[15]) == (192, 128, 128) and tuple(VOC_PALETTE[255]) == (224, 224, 192)
    with pytest.raises(DataError, match="not a VOC palette colour"):
        decode_palette_mask(np.full((2, 2, 3), 7, dtype=np.uint8))


def _devkit(tmp_path, flat):
    base = tmp_path / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "SegmentationClassAug", "ImageSets/Segmentation",
              "ImageSets/SegmentationAug"):
        (base / d).mkdir(parents=True)
    names = []
    for s in flat:
        name = f"2007_{int(s['name']):06d}"
        names.append(name)
        Image.fromarray(s["image"]).save(base / "JPEGImages" / f"{name}.jpg", quality=95)
        p = Image.fromarray(s["mask"].astype(np.uint8), mode="P")
        p.putpalette(VOC_PALETTE.ravel().tolist())
        p.save(base / "SegmentationClass" / f"{name}.png")
        Image.fromarray(s["mask"].astype(np.uint8), mode="L").save(base / "SegmentationClassAug" / f"{name}.png")
    (base / "ImageSets/Segmentation/val.txt").write_text("\n".join(names) + "\n")
    (base / "ImageSets/SegmentationAug/train_aug.txt").write_text(
        "".join(f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png\n" for n in names))
    return base, names


@pytest.mark.shared_data("voc_samples")
def test_devkit_index_png_and_sbd_aug_lists(tmp_path, flat):
    base, names = _devkit(tmp_path, flat)
    val = VOCSegmentation(tmp_path, "val")
    aug = VOCSegmentation(tmp_path / "VOCdevkit", "train_aug")
    assert [s["name"] for s in val] == names == [s["name"] for s in aug]
    for a, b, c in zip(val, aug, flat):
        assert np.array_equal(a["mask"], c["mask"]) and np.array_equal(b["mask"], c["mask"])
    assert np.array_equal(read_voc_mask(base / "SegmentationClass" / f"{names[0]}.png"), flat[0]["mask"])
    with pytest.raises(DataError, match="split list"):
        VOCSegmentation(tmp_path, "test")


@pytest.mark.shared_data("voc_samples")
def test_miou_equals_direct_confusion_computation(flat):
    """mIoU of SegmentationConfusion == IoU from an explicit per-class count over the real masks."""
    cm = SegmentationConfusion(21)
    inter = np.zeros(21)
    union = np.zeros(21)
    for s in flat:
        truth = s["mask"]
        pred = np.roll(np.where(truth == 255, 0, truth), 25, axis=1)  # a shifted "prediction"
        cm.update(truth, pred)
        keep = truth != 255
        for c in range(21):
            t, p = (truth == c) & keep, (pred == c) & keep
            inter[c] += (t & p).sum()
            union[c] += (t | p).sum()
    m = cm.compute(VOC_CLASSES)
    present = union > 0
    expected = (inter[present] / union[present]).mean()
    assert m["mIoU"] == pytest.approx(expected, abs=1e-12)
    assert m["per_class_IoU"]["sheep"] == pytest.approx(inter[17] / union[17])
    assert 0 < m["mIoU"] < 1
