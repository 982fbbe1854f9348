"""COCO 2014 / 2017 semantic segmentation from the instance annotations (pycocotools).

Each image's instance polygons / RLEs are painted into one class mask: 0 = background, categories
``1..K`` in the order of their COCO ids (``K`` = 80 for the full sets; the annotation file's own
categories otherwise), larger instances first so smaller ones stay visible on top. Crowd regions
are 255 (ignore) by default (``crowd="class"`` paints them with their category). Samples also
carry the image-level tags (``labels``, multi-hot over the ``K`` categories), the supervision of
weakly supervised segmentation.

Layouts: ``root/annotations/instances_{split}.json`` with images in ``root/{split}/`` (the official
archives; ``split`` = ``train2014``, ``val2014``, ``train2017``, ``val2017``), or any annotation
file given with ``annotation_file`` and images in ``image_dir`` (default: beside the JSON).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from geolesf.data.benchmarks.base import SampleList
from geolesf.errors import DataError

IGNORE_INDEX = 255
SPLITS = ("train2014", "val2014", "train2017", "val2017")


class COCOSegmentation(SampleList):
    """COCO semantic-segmentation samples ``dict(image, mask, labels, name)``."""

    ignore_index = IGNORE_INDEX

    def __init__(self, root: str | Path, split: str = "val2017", *, annotation_file: str | Path | None = None,
                 image_dir: str | Path | None = None, crowd: str = "ignore") -> None:
        from pycocotools.coco import COCO

        self.root = Path(root)
        if annotation_file is None:
            annotation_file = self.root / "annotations" / f"instances_{split}.json"
        self.annotation_file = Path(annotation_file)
        if not self.annotation_file.is_file():
            raise DataError(f"COCO annotation file {self.annotation_file} not found "
                            f"(split={split!r}; expected root/annotations/instances_<split>.json)")
        if crowd not in ("ignore", "class"):
            raise DataError(f"crowd must be 'ignore' or 'class', found '{crowd}'")
        self.crowd = crowd
        if image_dir is None:
            cand = self.root / split
            image_dir = cand if cand.is_dir() else self.annotation_file.parent
        self.image_dir = Path(image_dir)
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
            try:
                self.coco = COCO(str(self.annotation_file))
            except (ValueError, KeyError) as exc:
                raise DataError(f"{self.annotation_file}: not a COCO annotation file ({exc})") from None
        self.cat_ids = sorted(self.coco.getCatIds())
        self.cat_index = {c: i + 1 for i, c in enumerate(self.cat_ids)}
        cats = self.coco.loadCats(self.cat_ids)
        self.class_names: tuple[str, ...] = ("background", *(c["name"] for c in cats))
        self.image_ids = sorted(self.coco.getImgIds())
        if not self.image_ids:
            raise DataError(f"{self.annotation_file}: no images")

    @property
    def items(self) -> list[int]:  # type: ignore[override]
        return self.image_ids

    def mask(self, image_id: int) -> np.ndarray:
        """``(H, W)`` int64 class mask of one image."""
        info = self.coco.loadImgs(image_id)[0]
        h, w = int(info["height"]), int(info["width"])
        mask = np.zeros((h, w), dtype=np.int64)
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=image_id, iscrowd=None))
        for ann in sorted(anns, key=lambda a: -float(a.get("area", 0))):
            if not ann.get("segmentation"):
                continue
            m = self.coco.annToMask(ann).astype(bool)
            if m.shape != (h, w):
                raise DataError(f"{self.annotation_file}: annotation {ann['id']} mask {m.shape} != image {(h, w)}")
            crowd = bool(ann.get("iscrowd", 0))
            mask[m] = IGNORE_INDEX if crowd and self.crowd == "ignore" else self.cat_index[ann["category_id"]]
        return mask

    def __getitem__(self, index: int) -> dict[str, Any]:
        from PIL import Image

        image_id = self.image_ids[index]
        info = self.coco.loadImgs(image_id)[0]
        path = self.image_dir / info["file_name"]
        if not path.is_file():
            raise DataError(f"COCO image {path} not found (image id {image_id})")
        with Image.open(path) as im:
            image = np.array(im.convert("RGB"))
        mask = self.mask(image_id)
        if mask.shape != image.shape[:2]:
            raise DataError(f"{path}: image is {image.shape[:2]}, annotation says {mask.shape}")
        labels = np.zeros(len(self.cat_ids), dtype=np.float32)
        present = np.unique(mask)
        labels[[int(v) - 1 for v in present if 0 < v < IGNORE_INDEX]] = 1.0
        return {"image": image, "mask": mask, "labels": labels, "name": Path(info["file_name"]).stem}
