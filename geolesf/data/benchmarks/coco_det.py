"""MS COCO detection through ``pycocotools``: images, xyxy boxes, contiguous class indices.

``COCODetection(annotations, images)`` takes an instances JSON (``instances_val2017.json`` or
any COCO-format file such as the samples' ``test_coco.json``) and the folder of its images.
Category ids (1–90 with gaps in COCO) are mapped to contiguous indices ``0..C-1`` in id order;
``category_ids[k]`` maps back for :func:`geolesf.metrics.detection.coco_results`. ``iscrowd``
boxes are returned with ``crowd=True`` and left out of the image-level labels.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.data.benchmarks.voc import read_rgb
from geolesf.errors import DataError


def find_coco_files(root: str | Path, split: str = "val2017") -> tuple[Path, Path]:
    """``(annotation JSON, image folder)`` of a COCO split under ``root`` (official layout)."""
    root = Path(root)
    ann = root / "annotations" / f"instances_{split}.json"
    images = root / split
    if ann.is_file() and images.is_dir():
        return ann, images
    raise DataError(f"{root}: expected {ann} and the image folder {images} (COCO layout); "
                    "or pass --option annotations=FILE.json --option images=DIR")


class COCODetection:
    """One COCO-format annotation file and its images; ``dataset[i]`` reads the image on demand."""

    def __init__(self, annotations: str | Path, images: str | Path) -> None:
        from pycocotools.coco import COCO

        self.annotations = Path(annotations)
        self.images = Path(images)
        if not self.annotations.is_file():
            raise DataError(f"{self.annotations}: COCO annotation file not found")
        if not self.images.is_dir():
            raise DataError(f"{self.images}: COCO image folder not found")
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self.coco = COCO(str(self.annotations))
        except (ValueError, KeyError) as exc:
            raise DataError(f"{self.annotations}: not a COCO annotation file ({exc})") from None
        self.category_ids = sorted(self.coco.getCatIds())
        if not self.category_ids:
            raise DataError(f"{self.annotations}: no categories")
        self.classes = tuple(self.coco.loadCats(c)[0]["name"] for c in self.category_ids)
        self._index = {c: i for i, c in enumerate(self.category_ids)}
        self.ids = sorted(self.coco.getImgIds())

    def __len__(self) -> int:
        return len(self.ids)

    def annotation(self, index: int) -> dict[str, Any]:
        image_id = self.ids[index]
        info = self.coco.loadImgs(image_id)[0]
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=image_id))
        boxes, labels, crowd = [], [], []
        for a in anns:
            x, y, w, h = a["bbox"]
            if w <= 0 or h <= 0:
                continue
            boxes.append([x, y, x + w, y + h])
            labels.append(self._index[a["category_id"]])
            crowd.append(bool(a.get("iscrowd", 0)))
        return {"image_id": image_id, "file_name": info["file_name"], "width": info.get("width"),
                "height": info.get("height"), "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                "labels": np.asarray(labels, dtype=np.int64), "crowd": np.asarray(crowd, dtype=bool)}

    def __getitem__(self, index: int) -> dict[str, Any]:
        ann = self.annotation(index)
        path = self.images / ann["file_name"]
        image = read_rgb(path)
        image_labels = np.zeros(len(self.classes), dtype=np.float32)
        image_labels[np.unique(ann["labels"][~ann["crowd"]])] = 1.0
        return {"image": image, "image_id": ann["image_id"], "boxes": ann["boxes"], "labels": ann["labels"],
                "difficult": ann["crowd"], "image_labels": image_labels, "path": str(path)}
