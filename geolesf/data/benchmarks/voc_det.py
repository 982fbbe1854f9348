"""PASCAL VOC 2007 / 2012 detection: the devkit's XML annotations with difficult flags.

Layout (as distributed)::

    ROOT/VOCdevkit/VOC2007/Annotations/000001.xml
    ROOT/VOCdevkit/VOC2007/JPEGImages/000001.jpg
    ROOT/VOCdevkit/VOC2007/ImageSets/Main/{train,val,trainval,test}.txt

``root`` may be the folder holding ``VOCdevkit``, ``VOCdevkit`` itself, or the year folder.
When ``ImageSets/Main/<split>.txt`` is absent (small samples), ``split=None`` takes every XML in
``Annotations``; asking for a split whose list is missing is a :class:`DataError`.

Boxes are returned 0-based (``xmin - 1`` …, the Detectron / PCL convention) as float32
``x1, y1, x2, y2``; the devkit's inclusive-pixel IoU in :mod:`geolesf.metrics.detection`
gives the same matches on these as on the raw XML coordinates.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.data.benchmarks.voc import read_rgb
from geolesf.errors import DataError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)


@dataclass
class VOCAnnotation:
    image_id: str
    filename: str
    width: int
    height: int
    boxes: np.ndarray
    """(n, 4) float32, 0-based x1, y1, x2, y2."""
    labels: np.ndarray
    """(n,) int64 indices into the class list."""
    difficult: np.ndarray
    """(n,) bool."""


def parse_voc_xml(path: str | Path, classes: tuple[str, ...] = VOC_CLASSES) -> VOCAnnotation:
    """Read one VOC annotation file; unknown class names are a :class:`DataError`."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise DataError(f"{path}: not a readable VOC annotation ({exc})") from None
    index = {name: i for i, name in enumerate(classes)}
    boxes, labels, difficult = [], [], []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in index:
            raise DataError(f"{path}: object class '{name}' is not one of the {len(classes)} known classes")
        bb = obj.find("bndbox")
        if bb is None:
            raise DataError(f"{path}: object '{name}' has no <bndbox>")
        try:
            coords = [float(bb.findtext(k)) - 1.0 for k in ("xmin", "ymin", "xmax", "ymax")]
        except (TypeError, ValueError):
            raise DataError(f"{path}: object '{name}' has a malformed <bndbox>") from None
        boxes.append(coords)
        labels.append(index[name])
        difficult.append(int(obj.findtext("difficult") or 0) == 1)
    size = root.find("size")
    width = int(size.findtext("width")) if size is not None and size.findtext("width") else 0
    height = int(size.findtext("height")) if size is not None and size.findtext("height") else 0
    return VOCAnnotation(
        image_id=path.stem,
        filename=root.findtext("filename") or f"{path.stem}.jpg",
        width=width,
        height=height,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.asarray(labels, dtype=np.int64),
        difficult=np.asarray(difficult, dtype=bool),
    )


def find_year_dir(root: str | Path, year: str) -> Path:
    """``VOC<year>`` under ``root`` (accepting ``root`` = parent of VOCdevkit, VOCdevkit, or the year dir)."""
    root = Path(root)
    for candidate in (root, root / f"VOC{year}", root / "VOCdevkit" / f"VOC{year}"):
        if (candidate / "Annotations").is_dir():
            return candidate
    raise DataError(f"{root}: no VOC{year}/Annotations folder found (expected ROOT/VOCdevkit/VOC{year}/Annotations)")


class VOCDetection:
    """Images with boxes, labels and difficult flags; ``dataset[i]`` reads the JPEG on demand."""

    def __init__(self, root: str | Path, year: str = "2007", split: str | None = "trainval",
                 classes: tuple[str, ...] = VOC_CLASSES) -> None:
        self.dir = find_year_dir(root, str(year))
        self.year = str(year)
        self.classes = tuple(classes)
        if split is None:
            ids = sorted(p.stem for p in (self.dir / "Annotations").glob("*.xml"))
        else:
            listing = self.dir / "ImageSets" / "Main" / f"{split}.txt"
            if not listing.is_file():
                raise DataError(f"{listing}: image list for split '{split}' not found "
                                "(use split=None to take every annotation)")
            ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
        if not ids:
            raise DataError(f"{self.dir}: no images in split '{split}'")
        self.split = split
        self.ids = ids
        self._ann: dict[str, VOCAnnotation] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def annotation(self, index: int) -> VOCAnnotation:
        image_id = self.ids[index]
        if image_id not in self._ann:
            self._ann[image_id] = parse_voc_xml(self.dir / "Annotations" / f"{image_id}.xml", self.classes)
        return self._ann[image_id]

    def image_path(self, index: int) -> Path:
        return self.dir / "JPEGImages" / self.annotation(index).filename

    def __getitem__(self, index: int) -> dict[str, Any]:
        ann = self.annotation(index)
        path = self.image_path(index)
        image = read_rgb(path)
        image_labels = np.zeros(len(self.classes), dtype=np.float32)
        # Image-level labels (the only supervision of WSOD) from non-difficult objects, as
        # py-faster-rcnn / OICR with ``use_diff=False``.
        image_labels[np.unique(ann.labels[~ann.difficult])] = 1.0
        return {"image": image, "image_id": ann.image_id, "boxes": ann.boxes, "labels": ann.labels,
                "difficult": ann.difficult, "image_labels": image_labels, "path": str(path)}
