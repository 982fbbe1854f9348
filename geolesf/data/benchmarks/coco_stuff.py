"""COCO-Stuff-171 semantic segmentation (the H-CLIP / CAT-Seg training set).

Layout (``root``): images ``images/{train2017,val2017}/NAME.jpg`` and masks
``annotations/{train2017,val2017}/NAME.png`` (the official ``stuffthingmaps_trainval2017``), or the
Detectron2 copy ``stuffthingmaps_detectron2/{train2017,val2017}/NAME.png`` (already contiguous).

``label_format="stuffthingmaps"`` (default): pixel values are COCO category ids − 1 (0..181, 255 =
unlabelled); the 11 ids COCO never used are absent, and :func:`stuffthing_to_contiguous` maps the
171 used ids to 0..170 (:data:`COCO_STUFF_CLASSES` order: 80 things, then 91 stuff classes).
``label_format="contiguous"``: the values are already 0..170.

:func:`instances_to_stuffthing` rasterises COCO instance annotations (polygons/RLE, pycocotools) into a
stuffthingmaps-style PNG array — used to turn the real ``coco_samples/test_coco.json`` into masks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from geolesf.data.benchmarks.voc import read_rgb
from geolesf.data.benchmarks.base import SampleList
from geolesf.errors import DataError

COCO_THING_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)
COCO_STUFF_ONLY: tuple[str, ...] = (
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage", "cardboard", "carpet",
    "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard", "curtain", "desk-stuff",
    "dirt", "door-stuff", "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood",
    "flower", "fog", "food-other", "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house",
    "leaves", "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper",
    "pavement", "pillow", "plant-other", "plastic", "platform", "playingfield", "railing", "railroad", "river",
    "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow",
    "solid-other", "stairs", "stone", "straw", "structural-other", "table", "tent", "textile-other", "towel",
    "tree", "vegetable", "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
    "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood",
)
COCO_STUFF_CLASSES: tuple[str, ...] = COCO_THING_CLASSES + COCO_STUFF_ONLY
assert len(COCO_STUFF_CLASSES) == 171

#: The 171 COCO category ids (1-based) in :data:`COCO_STUFF_CLASSES` order.
COCO_STUFF_IDS: tuple[int, ...] = tuple(
    [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)] + list(range(92, 183)))
assert len(COCO_STUFF_IDS) == 171

IGNORE_INDEX = 255

_LUT = np.full(256, IGNORE_INDEX, dtype=np.int64)
_LUT[np.array(COCO_STUFF_IDS) - 1] = np.arange(171)


def stuffthing_to_contiguous(raw: np.ndarray) -> np.ndarray:
    """stuffthingmaps values (COCO id − 1, 255 unlabelled) → 0..170 with 255 ignore."""
    return _LUT[np.asarray(raw).astype(np.int64)]


def instances_to_stuffthing(coco: Any, image_id: int) -> np.ndarray:
    """Rasterise the instance annotations of one image (pycocotools ``COCO``) as a stuffthingmaps array.

    Larger objects are painted first so small ones stay visible; unannotated pixels are 255.
    """
    info = coco.imgs[image_id]
    out = np.full((info["height"], info["width"]), 255, dtype=np.uint8)
    anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=None)), key=lambda a: -a.get("area", 0))
    for ann in anns:
        m = coco.annToMask(ann).astype(bool)
        out[m] = int(ann["category_id"]) - 1
    return out


class COCOStuff(SampleList):
    """COCO-Stuff-171 samples ``dict(image, mask, name)``."""

    class_names = COCO_STUFF_CLASSES
    ignore_index = IGNORE_INDEX

    def __init__(self, root: str | Path, split: str = "val2017", *, label_format: str = "stuffthingmaps",
                 images_dir: str | Path | None = None, masks_dir: str | Path | None = None) -> None:
        if label_format not in ("stuffthingmaps", "contiguous"):
            raise DataError(f"COCO-Stuff: label_format must be stuffthingmaps or contiguous, found {label_format!r}")
        root = Path(root)
        self.label_format = label_format
        self.images_dir = Path(images_dir) if images_dir else root / "images" / split
        if masks_dir:
            self.masks_dir = Path(masks_dir)
        else:
            cands = [root / "annotations" / split, root / "stuffthingmaps_trainval2017" / split,
                     root / "stuffthingmaps_detectron2" / split]
            self.masks_dir = next((c for c in cands if c.is_dir()), cands[0])
            if self.masks_dir.parent.name == "stuffthingmaps_detectron2":
                self.label_format = "contiguous"
        for d in (self.images_dir, self.masks_dir):
            if not d.is_dir():
                raise DataError(f"COCO-Stuff: folder {d} not found")
        self.items = sorted(p.stem for p in self.masks_dir.glob("*.png"))
        if not self.items:
            raise DataError(f"COCO-Stuff: no .png masks in {self.masks_dir}")

    @property
    def num_classes(self) -> int:
        return 171

    def __getitem__(self, i: int) -> dict[str, Any]:
        name = self.items[i]
        image = read_rgb(self.images_dir / f"{name}.jpg")
        path = self.masks_dir / f"{name}.png"
        try:
            with Image.open(path) as im:
                raw = np.array(im)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read mask ({exc})") from exc
        if raw.ndim != 2 or raw.shape != image.shape[:2]:
            raise DataError(f"{path}: expected a single-band {image.shape[:2]} mask, found {raw.shape}")
        if self.label_format == "stuffthingmaps":
            valid = (raw == 255) | np.isin(raw, np.array(COCO_STUFF_IDS) - 1)
            if not valid.all():
                raise DataError(f"{path}: value {int(raw[~valid][0])} is not a COCO-Stuff id − 1 (or 255)")
            mask = stuffthing_to_contiguous(raw)
        else:
            bad = (raw > 170) & (raw != 255)
            if bad.any():
                raise DataError(f"{path}: value {int(raw[bad][0])} outside 0..170 / 255")
            mask = raw.astype(np.int64)
        return {"image": image, "mask": mask, "name": name}
