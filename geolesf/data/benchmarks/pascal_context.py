"""PASCAL-Context (VOC 2010 images with whole-scene labels): PC-59 and PC-459.

Layouts (``root`` = the ``VOC2010`` folder, or a folder holding it / ``VOCdevkit/VOC2010``):

* images ``JPEGImages/NAME.jpg``; split lists ``ImageSets/SegmentationContext/{train,val}.txt``
  (mmsegmentation) or ``ImageSets/Main/{train,val}.txt``, or ``list_file=``;
* **PC-59** masks ``SegmentationClassContext/NAME.png`` (mmsegmentation/Detail-API conversion): 0 =
  background, 1..59 the classes of :data:`PC59_CLASSES`. ``include_background=False`` (the
  open-vocabulary "PC-59" protocol) maps 0 → 255 and k → k−1; ``True`` gives 60 classes;
* **PC-459** label files ``trainval/NAME.mat`` (key ``LabelMap``, values 1..459 as in the release's
  ``labels.txt``, 0 = unlabelled) or converted ``NAME.png``/``.tif`` maps with the same values.
  ``mask = value − 1``; unlabelled → :data:`FULL_IGNORE_INDEX` (65535, since 255 is a class here). Class
  names are read from ``labels.txt`` (``"k: name"`` lines) when present.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from geolesf.data.benchmarks.voc import read_rgb
from geolesf.data.benchmarks.base import SampleList
from geolesf.errors import DataError

PC59_CLASSES: tuple[str, ...] = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle", "building",
    "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup", "curtain", "dog",
    "door", "fence", "floor", "flower", "food", "grass", "ground", "horse", "keyboard", "light", "motorbike",
    "mountain", "mouse", "person", "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves",
    "sidewalk", "sign", "sky", "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall",
    "water", "window", "wood",
)
assert len(PC59_CLASSES) == 59

IGNORE_INDEX = 255
FULL_IGNORE_INDEX = 65535


def read_labels_txt(path: str | Path) -> tuple[str, ...]:
    """``labels.txt`` of the PASCAL-Context release (``"1: accordion"`` lines) → names in id order."""
    names: dict[int, str] = {}
    for line in Path(path).read_text().splitlines():
        m = re.match(r"\s*(\d+)\s*:\s*(.+?)\s*$", line)
        if m:
            names[int(m.group(1))] = m.group(2)
    if not names or sorted(names) != list(range(1, len(names) + 1)):
        raise DataError(f"{path}: expected consecutive 'k: name' lines starting at 1")
    return tuple(names[k] for k in sorted(names))


def read_label_map(path: Path) -> np.ndarray:
    """A PC label file (``.mat`` ``LabelMap`` or an index image) as int64."""
    try:
        if path.suffix == ".mat":
            from scipy.io import loadmat

            data = loadmat(path)
            if "LabelMap" not in data:
                raise DataError(f"{path}: no 'LabelMap' key (found {[k for k in data if not k.startswith('__')]})")
            return np.asarray(data["LabelMap"]).astype(np.int64)
        with Image.open(path) as im:
            arr = np.array(im)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read label map ({exc})") from exc
    if arr.ndim != 2:
        raise DataError(f"{path}: expected a single-band label map, found shape {arr.shape}")
    return arr.astype(np.int64)


class PascalContext(SampleList):
    """PASCAL-Context samples ``dict(image, mask, name)`` for ``classes=59`` or ``459``."""

    def __init__(self, root: str | Path, split: str = "val", *, classes: int = 59, include_background: bool = False,
                 list_file: str | Path | None = None, label_dir: str | None = None) -> None:
        if classes not in (59, 459):
            raise DataError(f"PASCAL-Context: classes must be 59 or 459, found {classes}")
        root = Path(root)
        base = next((c for c in (root, root / "VOC2010", root / "VOCdevkit" / "VOC2010")
                     if (c / "JPEGImages").is_dir()), None)
        if base is None:
            raise DataError(f"PASCAL-Context: no JPEGImages/ under {root}, {root}/VOC2010 or {root}/VOCdevkit/VOC2010")
        self.base, self.classes, self.include_background = base, classes, include_background
        if classes == 59:
            self.label_dir = base / (label_dir or "SegmentationClassContext")
            self.class_names = (("background",) if include_background else ()) + PC59_CLASSES
            self.ignore_index = IGNORE_INDEX
        else:
            self.label_dir = next((d for d in ([base / label_dir] if label_dir else
                                               [base / "trainval", root / "trainval", base / "SegmentationClassContext459"])
                                   if d.is_dir()), base / (label_dir or "trainval"))
            labels = next((p for p in (self.label_dir.parent / "labels.txt", base / "labels.txt", root / "labels.txt")
                           if p.is_file()), None)
            self.class_names = read_labels_txt(labels) if labels else tuple(f"class {k}" for k in range(1, 460))
            if len(self.class_names) != 459:
                raise DataError(f"{labels}: expected 459 class names, found {len(self.class_names)}")
            self.ignore_index = FULL_IGNORE_INDEX
        if not self.label_dir.is_dir():
            raise DataError(f"PASCAL-Context: label folder {self.label_dir} not found")
        lst = Path(list_file) if list_file else next(
            (p for p in (base / "ImageSets" / "SegmentationContext" / f"{split}.txt",
                         base / "ImageSets" / "Main" / f"{split}.txt") if p.is_file()), None)
        if lst is None or not lst.is_file():
            raise DataError(f"PASCAL-Context: split list for '{split}' not found under {base}/ImageSets")
        self.items = [ln.split()[0] for ln in lst.read_text().splitlines() if ln.strip()]

    def _label_path(self, name: str) -> Path:
        for ext in (".png", ".mat", ".tif"):
            p = self.label_dir / f"{name}{ext}"
            if p.is_file():
                return p
        raise DataError(f"PASCAL-Context: no label file for {name} in {self.label_dir}")

    def __getitem__(self, i: int) -> dict[str, Any]:
        name = self.items[i]
        image = read_rgb(self.base / "JPEGImages" / f"{name}.jpg")
        path = self._label_path(name)
        raw = read_label_map(path)
        if raw.shape != image.shape[:2]:
            raise DataError(f"{path}: {raw.shape} but the image is {image.shape[:2]}")
        top = 59 if self.classes == 59 else 459
        bad = (raw > top) & (raw != 255 if self.classes == 59 else True)
        if bad.any():
            raise DataError(f"{path}: value {int(raw[bad][0])} outside 0..{top}")
        if self.classes == 59 and self.include_background:
            mask = raw
        else:
            mask = np.where((raw == 0) | (raw > top), self.ignore_index, raw - 1)
        return {"image": image, "mask": mask.astype(np.int64), "name": name}
