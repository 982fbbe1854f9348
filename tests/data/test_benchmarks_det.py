"""VOC XML and COCO JSON detection loaders on the real samples."""

from __future__ import annotations

import numpy as np
import pytest

from geolesf.data.benchmarks.coco_det import COCODetection
from geolesf.data.benchmarks.voc_det import (
    VOC_CLASSES,
    VOCDetection,
    find_year_dir,
    parse_voc_xml,
)
from geolesf.errors import DataError


@pytest.mark.shared_data("voc_samples")
def test_parse_voc_xml_real_sample(shared_data):
    ann = parse_voc_xml(shared_data / "voc_samples/mmdet_VOCdevkit/VOC2007/Annotations/000001.xml")
    assert ann.image_id == "000001" and (ann.width, ann.height) == (353, 500)
    assert [VOC_CLASSES[i] for i in ann.labels] == ["dog", "person"]
    # 0-based: the XML says dog xmin=48 ymin=240 xmax=195 ymax=371
    np.testing.assert_array_equal(ann.boxes[0], [47, 239, 194, 370])
    assert ann.difficult.tolist() == [False, False]


def test_parse_voc_xml_difficult_and_unknown_class(tmp_path):
    xml = ("<annotation><filename>x.jpg</filename><size><width>10</width><height>10</height></size>"
           "<object><name>cat</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>2</ymin>"
           "<xmax>5</xmax><ymax>6</ymax></bndbox></object></annotation>")
    (tmp_path / "a.xml").write_text(xml)
    ann = parse_voc_xml(tmp_path / "a.xml")
    assert ann.difficult.tolist() == [True] and VOC_CLASSES[ann.labels[0]] == "cat"
    (tmp_path / "b.xml").write_text(xml.replace("cat", "unicorn"))
    with pytest.raises(DataError, match="unicorn"):
        parse_voc_xml(tmp_path / "b.xml")


@pytest.mark.shared_data("voc_samples")
def test_voc_dataset_samples(shared_data):
    root = shared_data / "voc_samples" / "mmdet_VOCdevkit"
    ds = VOCDetection(root, "2007", split=None)
    assert len(ds) == 1
    item = ds[0]
    assert item["image"].shape == (500, 353, 3) and item["image"].dtype == np.uint8
    assert np.flatnonzero(item["image_labels"]).tolist() == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("person")]
    assert find_year_dir(root, "2012").name == "VOC2012"
    with pytest.raises(DataError, match="trainval"):
        VOCDetection(root, "2007", split="trainval")  # the sample has no ImageSets lists
    with pytest.raises(DataError, match="VOC2010"):
        VOCDetection(root, "2010", split=None)


def test_voc_difficult_objects_not_in_image_labels(tmp_path):
    year = tmp_path / "VOCdevkit" / "VOC2007"
    (year / "Annotations").mkdir(parents=True)
    (year / "JPEGImages").mkdir()
    (year / "ImageSets" / "Main").mkdir(parents=True)
    (year / "ImageSets" / "Main" / "test.txt").write_text("a\n")
    (year / "Annotations" / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename>"
        "<object><name>cat</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>4</xmax>"
        "<ymax>4</ymax></bndbox></object><object><name>dog</name><difficult>0</difficult><bndbox><xmin>1</xmin>"
        "<ymin>1</ymin><xmax>4</xmax><ymax>4</ymax></bndbox></object></annotation>")
    from PIL import Image

    Image.new("RGB", (8, 8)).save(year / "JPEGImages" / "a.jpg")
    item = VOCDetection(tmp_path, "2007", "test")[0]
    assert np.flatnonzero(item["image_labels"]).tolist() == [VOC_CLASSES.index("dog")]
    assert item["difficult"].tolist() == [True, False]


@pytest.mark.shared_data("coco_samples")
def test_coco_dataset_samples(shared_data):
    root = shared_data / "coco_samples"
    ds = COCODetection(root / "test_coco.json", root)
    assert len(ds) == 4 and ds.classes == ("person",) and ds.category_ids == [1]
    total = sum(len(ds.annotation(i)["boxes"]) for i in range(len(ds)))
    assert total == 14
    item = ds[0]
    assert item["image_id"] == 785 and item["image"].shape == (425, 640, 3)
    # bbox [280.79, 44.73, 218.7, 346.68] (x, y, w, h) -> xyxy
    np.testing.assert_allclose(item["boxes"][0], [280.79, 44.73, 280.79 + 218.7, 44.73 + 346.68], rtol=1e-6)
    assert item["image_labels"].tolist() == [1.0]
    with pytest.raises(DataError, match="not found"):
        COCODetection(root / "missing.json", root)
