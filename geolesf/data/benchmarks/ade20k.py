"""ADE20K in its two distributed formats.

**SceneParsing (ADE-150)** — ``ADEChallengeData2016/images/{training,validation}/NAME.jpg`` and
``annotations/{training,validation}/NAME.png``: an 8-bit class map, 0 = "other" (ignored), 1..150 the
classes of :data:`ADE150_CLASSES`. :class:`ADE20KSceneParsing` returns ``mask = value − 1`` with
0 → 255 (the ``reduce_zero_label`` convention of mmsegmentation/Detectron2).

**Full ADE20K (2021_17_01)** — per image ``NAME.jpg``, ``NAME.json`` (objects with polygons, the
WordNet-style ``name``, ``name_ndx``, part level, instance masks) and ``NAME_seg.png`` whose pixel
``(R, G, B)`` encodes the object class ``R/10·256 + G`` (= the JSON ``name_ndx``; 0 = unlabelled) and the
instance in ``B``; ``NAME_parts_k.png`` hold the level-``k`` parts the same way.
:class:`ADE20KFull` returns the raw class map (``class_map``, int64, 0 = unlabelled), the instance
map, the part maps, the objects of the JSON and a ``mask`` in a chosen vocabulary:

* ``vocabulary="full"``: ``mask = class_map − 1`` (0-based full-ADE index), ignore ``65535``
  (the full index exceeds 255);
* ``vocabulary="ade150"`` (default) or any list of names: an object maps to vocabulary class ``k``
  when one of its comma-separated WordNet synonyms equals name ``k`` (case-insensitive); other
  pixels → 255. This is an approximation of the official 150-class conversion (the authors' mapping
  table is not in the release samples); pass ``index_mapping={name_ndx: train_id}`` for an exact table
  such as the ADE-847 mapping.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from geolesf.data.benchmarks.voc import read_rgb
from geolesf.data.benchmarks.base import SampleList
from geolesf.errors import DataError

ADE150_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag",
)
assert len(ADE150_CLASSES) == 150

IGNORE_INDEX = 255
FULL_IGNORE_INDEX = 65535


def decode_ade_seg(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``_seg.png`` / ``_parts_k.png`` pixels → ``(class_map, instance_map)`` int64 (class = R/10·256 + G)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise DataError(f"ADE20K seg image: expected (H, W, 3), found {rgb.shape}")
    r, g = rgb[..., 0].astype(np.int64), rgb[..., 1].astype(np.int64)
    classes = r // 10 * 256 + g
    b = rgb[..., 2].astype(np.int64)
    lut = np.cumsum(np.bincount(b.ravel(), minlength=256) > 0) - 1  # rank of each B value (0 = first)
    return classes, lut[b]


def _read_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB") if im.mode not in ("L", "P", "I", "I;16") else im)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read PNG ({exc})") from exc


def read_ade_json(path: str | Path) -> dict[str, Any]:
    """The ``annotation`` record of a full-ADE20K JSON (encoded latin-1 by the authors' tools)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            data = json.loads(raw.decode("latin-1"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read ADE20K JSON ({exc})") from exc
    ann = data.get("annotation") if isinstance(data, dict) else None
    if not isinstance(ann, dict) or "object" not in ann:
        raise DataError(f"{path}: expected {{'annotation': {{'object': [...]}}}}, found keys "
                        f"{list(data)[:5] if isinstance(data, dict) else type(data).__name__}")
    return ann


class ADE20KSceneParsing(SampleList):
    """ADE-150 SceneParsing samples ``dict(image, mask, name)``; ``split`` is training or validation."""

    class_names = ADE150_CLASSES
    ignore_index = IGNORE_INDEX

    def __init__(self, root: str | Path, split: str = "validation") -> None:
        root = Path(root)
        base = root / "ADEChallengeData2016" if (root / "ADEChallengeData2016").is_dir() else root
        self.images_dir = base / "images" / split
        self.masks_dir = base / "annotations" / split
        for d in (self.images_dir, self.masks_dir):
            if not d.is_dir():
                raise DataError(f"ADE20K SceneParsing: folder {d} not found (expected ADEChallengeData2016/"
                                "{images,annotations}/{training,validation})")
        self.items = sorted(p.stem for p in self.masks_dir.glob("*.png"))
        if not self.items:
            raise DataError(f"ADE20K SceneParsing: no .png masks in {self.masks_dir}")

    def __getitem__(self, i: int) -> dict[str, Any]:
        name = self.items[i]
        img_path = self.images_dir / f"{name}.jpg"
        if not img_path.is_file():
            raise DataError(f"ADE20K SceneParsing: image {img_path} not found for mask {name}.png")
        image = read_rgb(img_path)
        raw = _read_png(self.masks_dir / f"{name}.png")
        if raw.ndim != 2:
            raise DataError(f"{self.masks_dir / name}.png: expected a single-channel class map, found {raw.shape}")
        if raw.max() > 150:
            raise DataError(f"{self.masks_dir / name}.png: value {int(raw.max())} outside 0..150")
        if raw.shape != image.shape[:2]:
            raise DataError(f"{name}: mask {raw.shape} and image {image.shape[:2]} differ in size")
        mask = raw.astype(np.int64) - 1
        mask[mask < 0] = IGNORE_INDEX
        return {"image": image, "mask": mask, "name": name}


def _synonyms(name: str) -> list[str]:
    return [s.strip().lower() for s in str(name).split(",") if s.strip()]


class ADE20KFull(SampleList):
    """Full-format ADE20K samples (``NAME.jpg`` + ``NAME.json`` + ``NAME_seg.png`` + parts), any folder depth."""

    def __init__(self, root: str | Path, *, vocabulary: str | Sequence[str] = "ade150",
                 index_mapping: Mapping[int, int] | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"ADE20K root {self.root} is not a directory")
        self.items = sorted(self.root.rglob("*_seg.png"))
        if not self.items:
            raise DataError(f"ADE20K full format: no *_seg.png files under {self.root}")
        self.index_mapping = {int(k): int(v) for k, v in (index_mapping or {}).items()}
        if vocabulary == "full":
            self.class_names: tuple[str, ...] = ()
            self.ignore_index = FULL_IGNORE_INDEX
        else:
            self.class_names = ADE150_CLASSES if vocabulary == "ade150" else tuple(vocabulary)
            self.ignore_index = IGNORE_INDEX
        self.vocabulary = vocabulary if isinstance(vocabulary, str) else "custom"
        self._lookup = {n.strip().lower(): k for k, n in enumerate(self.class_names)}

    def _vocab_id(self, full_name: str) -> int | None:
        for syn in _synonyms(full_name):
            if syn in self._lookup:
                return self._lookup[syn]
        return None

    def __getitem__(self, i: int) -> dict[str, Any]:
        seg_path = self.items[i]
        stem = seg_path.name[: -len("_seg.png")]
        folder = seg_path.parent
        img_path, json_path = folder / f"{stem}.jpg", folder / f"{stem}.json"
        for p in (img_path, json_path):
            if not p.is_file():
                raise DataError(f"ADE20K full format: {p} missing beside {seg_path.name}")
        image = read_rgb(img_path)
        class_map, instance_map = decode_ade_seg(_read_png(seg_path))
        if class_map.shape != image.shape[:2]:
            raise DataError(f"{seg_path}: {class_map.shape} but image {img_path.name} is {image.shape[:2]}")
        parts = {}
        for part_path in sorted(folder.glob(f"{stem}_parts_*.png")):
            level = int(part_path.stem.rsplit("_", 1)[1])
            parts[level] = decode_ade_seg(_read_png(part_path))[0]
            if parts[level].shape != class_map.shape:
                raise DataError(f"{part_path}: {parts[level].shape} but {seg_path.name} is {class_map.shape}")
        ann = read_ade_json(json_path)
        objects = [{"id": int(o["id"]), "name": str(o["name"]), "name_ndx": int(o["name_ndx"]),
                    "raw_name": str(o.get("raw_name", "")), "part_level": int(o.get("parts", {}).get("part_level", 0)),
                    "polygon": o.get("polygon")} for o in ann["object"]]
        index_names = {o["name_ndx"]: o["name"] for o in objects if o["part_level"] == 0}
        unknown = set(np.flatnonzero(np.bincount(class_map.ravel())).tolist()) - set(index_names) - {0}
        if unknown:
            raise DataError(f"{seg_path}: class indices {sorted(unknown)[:5]} are not objects of {json_path.name}")
        mask = self._to_vocabulary(class_map, index_names)
        return {"image": image, "mask": mask, "name": stem, "class_map": class_map, "instance_map": instance_map,
                "parts": parts, "objects": objects, "index_names": index_names, "scene": ann.get("scene")}

    def _to_vocabulary(self, class_map: np.ndarray, index_names: dict[int, str]) -> np.ndarray:
        if self.vocabulary == "full" and not self.index_mapping:
            return np.where(class_map > 0, class_map - 1, FULL_IGNORE_INDEX)
        present = np.flatnonzero(np.bincount(class_map.ravel()))
        lut = np.full(int(present[-1]) + 1, self.ignore_index, dtype=np.int64)
        for idx in present.tolist():
            if idx == 0:
                continue
            target = self.index_mapping.get(idx) if self.index_mapping else self._vocab_id(index_names[idx])
            if target is not None:
                lut[idx] = target
        return lut[class_map]


def open_ade20k(root: str | Path, split: str = "validation", **kwargs: Any) -> ADE20KSceneParsing | ADE20KFull:
    """SceneParsing when ``root`` holds ``ADEChallengeData2016``/``images``+``annotations``, else the full format."""
    root = Path(root)
    if (root / "ADEChallengeData2016").is_dir() or ((root / "images").is_dir() and (root / "annotations").is_dir()):
        return ADE20KSceneParsing(root, split)
    return ADE20KFull(root, **kwargs)
