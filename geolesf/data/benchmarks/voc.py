"""PASCAL VOC 2012 semantic segmentation (20 classes / 20 + background) and the SBD "aug" lists.

Layouts read (``root`` may point at any of them):

1. **VOC devkit** — ``root/VOC2012/`` (or ``root`` itself) holding ``JPEGImages/NAME.jpg``,
   ``SegmentationClass/NAME.png`` and ``ImageSets/Segmentation/{train,val,trainval}.txt``.
2. **SBD augmented set** (used by weakly supervised segmentation) — ``SegmentationClassAug/NAME.png``
   with a list ``ImageSets/SegmentationAug/train_aug.txt`` (or ``train_aug.txt`` next to the images).
   Split names ending in ``_aug`` select this mask folder and list. List lines may be bare names
   (``2007_000032``) or DeepLab-style pairs (``/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png``).
3. **Flat sample folders** — ``NAME_image.{png,jpg}`` + ``NAME_target.png`` side by side (the layout of
   ``voc_samples/deeplabv3plus_val``); ``split`` is ignored there.

Masks may be index PNGs (PIL mode ``P`` or ``L``: the value is the class id, 255 = void) or RGB
renderings in the VOC palette (the void colour, cream ``(224, 224, 192)``, decodes to 255); a
colour outside the palette is a :class:`~geolesf.errors.DataError`.

``include_background=False`` gives the "VOC-20" protocol of open-vocabulary papers: background
pixels become ignore (255) and object ids 1..20 become 0..19.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from geolesf.data.benchmarks.base import SampleList
from geolesf.errors import DataError

IGNORE_INDEX = 255

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
"""The 21 VOC segmentation class names, index = mask value (0 = background)."""

#: Human-readable names (used as CLIP prompts by open-vocabulary models).
VOC_PROMPT_NAMES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "dining table", "dog", "horse", "motorbike", "person", "potted plant", "sheep", "sofa",
    "train", "tv monitor",
)


def _voc_colormap(n: int = 256) -> np.ndarray:
    """The devkit's ``labelcolormap`` (bit-interleaved), ``(n, 3)`` uint8."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


VOC_PALETTE: np.ndarray = _voc_colormap(256)
"""``(256, 3)`` uint8 VOC palette: row ``k`` is the colour of mask value ``k`` (row 255 = void,
``(224, 224, 192)``). ``Image.putpalette(VOC_PALETTE.ravel())`` renders index masks like the devkit."""
VOC_PALETTE.setflags(write=False)

_COLOUR_TO_ID = {tuple(int(v) for v in VOC_PALETTE[k]): k for k in [*range(len(VOC_CLASSES)), IGNORE_INDEX]}


def decode_palette_mask(rgb: np.ndarray, *, source: str = "mask") -> np.ndarray:
    """Turn an ``(H, W, 3)`` RGB rendering of a VOC mask into ``(H, W)`` int64 class ids (255 = void).

    Raises :class:`DataError` naming ``source`` when a colour is not one of the 21 class colours or
    the void colour (for example a resampled, anti-aliased mask).
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DataError(f"{source}: expected an (H, W, 3) RGB mask, found shape {rgb.shape}")
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    uniq, inverse = np.unique(code, return_inverse=True)
    lut = np.empty(len(uniq), dtype=np.int64)
    for i, c in enumerate(uniq):
        colour = (int(c) >> 16, (int(c) >> 8) & 255, int(c) & 255)
        if colour not in _COLOUR_TO_ID:
            raise DataError(f"{source}: colour {colour} is not a VOC palette colour "
                            "(expected one of the 21 class colours or void (224, 224, 192))")
        lut[i] = _COLOUR_TO_ID[colour]
    return lut[inverse].reshape(rgb.shape[:2])


def read_voc_mask(path: str | Path) -> np.ndarray:
    """Read a VOC mask file (index PNG or RGB palette rendering) as ``(H, W)`` int64, 255 = void."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            mode = im.mode
            arr = np.array(im.convert("RGB") if mode in ("RGBA", "PA") else im)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read mask ({exc})") from exc
    if mode in ("P", "L", "I", "I;16"):
        mask = arr.astype(np.int64)
    elif arr.ndim == 3:
        mask = decode_palette_mask(arr[..., :3], source=str(path))
    else:
        raise DataError(f"{path}: expected a palette/grey index PNG or an RGB mask, found mode {mode}")
    bad = (mask >= len(VOC_CLASSES)) & (mask != IGNORE_INDEX)
    if bad.any():
        raise DataError(f"{path}: holds class id {int(mask[bad][0])}; expected 0..20 or 255")
    return mask


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image as ``(H, W, 3)`` uint8."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read image ({exc})") from exc


def _find_base(root: Path) -> Path | None:
    """The folder holding ``JPEGImages`` (root, root/VOC2012 or root/VOCdevkit/VOC2012)."""
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (cand / "JPEGImages").is_dir():
            return cand
    return None


def _read_list(path: Path) -> list[str]:
    names = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        first = line.split()[0]
        names.append(Path(first).stem)
    if not names:
        raise DataError(f"{path}: image list is empty")
    return names


class VOCSegmentation(SampleList):
    """PASCAL VOC segmentation samples as ``dict(image, mask, name)``.

    ``image`` is ``(H, W, 3)`` uint8, ``mask`` ``(H, W)`` int64 with 255 = ignore, ``name`` the image
    id. ``transforms`` (optional) maps the sample dict to a new one.
    """

    ignore_index = IGNORE_INDEX

    def __init__(self, root: str | Path, split: str = "val", *, include_background: bool = True,
                 mask_dir: str | None = None, list_file: str | Path | None = None,
                 transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"VOC root {self.root} is not a directory")
        self.split = split
        self.include_background = include_background
        self.transforms = transforms
        self.class_names: tuple[str, ...] = VOC_CLASSES if include_background else VOC_CLASSES[1:]
        self.prompt_names: tuple[str, ...] = VOC_PROMPT_NAMES if include_background else VOC_PROMPT_NAMES[1:]
        base = _find_base(self.root)
        if base is None:
            self.items = self._flat_items()
        else:
            self.items = self._devkit_items(base, split, mask_dir, list_file)

    def _flat_items(self) -> list[tuple[str, Path, Path]]:
        items = []
        for target in sorted(self.root.glob("*_target.png")):
            name = target.name[: -len("_target.png")]
            images = [p for ext in (".png", ".jpg", ".jpeg") if (p := self.root / f"{name}_image{ext}").is_file()]
            if not images:
                raise DataError(f"{target}: no matching {name}_image.png/.jpg beside it")
            items.append((name, images[0], target))
        if not items:
            raise DataError(f"{self.root}: no VOC layout found (expected JPEGImages/ under root, root/VOC2012 "
                            "or root/VOCdevkit/VOC2012, or NAME_image.png + NAME_target.png pairs)")
        return items

    def _devkit_items(self, base: Path, split: str, mask_dir: str | None,
                      list_file: str | Path | None) -> list[tuple[str, Path, Path]]:
        aug = split.endswith("_aug")
        masks = base / (mask_dir or ("SegmentationClassAug" if aug else "SegmentationClass"))
        if list_file is not None:
            lst = Path(list_file)
        else:
            cands = ([base / "ImageSets" / "SegmentationAug" / f"{split}.txt", base / f"{split}.txt",
                      base / "ImageSets" / "Segmentation" / f"{split}.txt"] if aug
                     else [base / "ImageSets" / "Segmentation" / f"{split}.txt"])
            lst = next((c for c in cands if c.is_file()), cands[0])
        if not lst.is_file():
            raise DataError(f"VOC split list {lst} not found (split={split!r})")
        if not masks.is_dir():
            raise DataError(f"VOC mask folder {masks} not found")
        items = []
        for name in _read_list(lst):
            img = base / "JPEGImages" / f"{name}.jpg"
            items.append((name, img, masks / f"{name}.png"))
        return items

    def __getitem__(self, index: int) -> dict[str, Any]:
        name, img_path, mask_path = self.items[index]
        for p in (img_path, mask_path):
            if not p.is_file():
                raise DataError(f"VOC sample {name}: {p} not found")
        image = read_rgb(img_path)
        mask = read_voc_mask(mask_path)
        if mask.shape != image.shape[:2]:
            raise DataError(f"{mask_path}: mask is {mask.shape}, image {img_path.name} is {image.shape[:2]}")
        if not self.include_background:
            mask = np.where((mask == 0) | (mask == IGNORE_INDEX), IGNORE_INDEX, mask - 1)
        sample = {"image": image, "mask": mask, "name": name}
        return self.transforms(sample) if self.transforms else sample
