"""Training samples for SAM PEFT: prompted crops from vector labels, semantic crops from label tiles.

* **Prompt mode** — a GeoTIFF and a vector file of object footprints (e.g. the SpaceNet building
  polygons). Footprints are reprojected to the raster CRS and burnt into an instance raster
  (object ``k`` → value ``k + 1``). A sample is a square crop with up to ``max_objects`` objects;
  each object gives its mask, a box prompt (its pixel extent, each side jittered by a random
  0–``box_jitter`` px as in SAM-PARSER's protocol) and a point prompt (a random pixel of the
  object). The bottom ``val_fraction`` of the rows is held out for evaluation (a spatial split,
  no crop straddles it).
* **Semantic mode** — image / label tiles (PNG or GeoTIFF, e.g. LoveDA, Potsdam, Vaihingen);
  label values listed in ``class_names`` are the classes, every other value is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from geolesf.errors import DataError

IGNORE = -100


@dataclass
class PromptScene:
    image: np.ndarray
    """``(bands, H, W)`` raw values."""
    instances: np.ndarray
    """``(H, W)`` int32, 0 = no object, ``k`` = object ``k``."""
    valid: np.ndarray
    crs: Any
    transform: Any
    n_objects: int


def read_prompt_scene(image_path: str | Path, labels_path: str | Path) -> PromptScene:
    """Read a raster and burn its vector footprints (reprojected to the raster CRS) into instances."""
    import geopandas as gpd
    import rasterio
    from rasterio.features import rasterize

    for p, what in ((image_path, "data.image"), (labels_path, "data.labels")):
        if not p or not Path(p).is_file():
            raise DataError(f"{what} {p}: file not found")
    with rasterio.open(image_path) as src:
        image = src.read()
        valid = src.dataset_mask() > 0
        crs, transform, shape = src.crs, src.transform, (src.height, src.width)
    frame = gpd.read_file(labels_path)
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    if frame.empty:
        raise DataError(f"{labels_path}: no geometries")
    if frame.crs is not None and crs is not None and frame.crs != crs:
        frame = frame.to_crs(crs)
    shapes = [(geom, k + 1) for k, geom in enumerate(frame.geometry)]
    instances = rasterize(shapes, out_shape=shape, transform=transform, fill=0, dtype="int32")
    if not instances.any():
        raise DataError(f"{labels_path}: no footprint overlaps {image_path}")
    return PromptScene(image, instances, valid, crs, transform, len(shapes))


def object_prompts(inst: np.ndarray, ids: np.ndarray, rng: np.random.Generator | None, jitter: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masks ``(N, h, w)``, boxes ``(N, 4)`` x0,y0,x1,y1 and points ``(N, 1, 2)`` for objects ``ids``."""
    h, w = inst.shape
    masks, boxes, points = [], [], []
    for k in ids:
        m = inst == k
        ys, xs = np.nonzero(m)
        # SAM's conventions (segment_anything.utils.amg): inclusive pixel indices; the prompt
        # encoder itself adds the half-pixel shift to the pixel centre.
        box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float32)
        if rng is not None and jitter > 0:
            box += rng.integers(0, jitter + 1, 4) * np.array([-1, -1, 1, 1])
            box = np.clip(box, 0, [w - 1, h - 1, w - 1, h - 1]).astype(np.float32)
        i = rng.integers(len(ys)) if rng is not None else len(ys) // 2
        masks.append(m)
        boxes.append(box)
        points.append([[xs[i], ys[i]]])
    return np.stack(masks).astype(np.float32), np.stack(boxes), np.asarray(points, dtype=np.float32)


class PromptCrops(Dataset):
    """Random (training) or grid (evaluation) crops of a :class:`PromptScene` with object prompts."""

    def __init__(self, scene: PromptScene, scaled: np.ndarray, rows: tuple[int, int], crop: int, *,
                 samples: int = 0, seed: int = 0, jitter: int = 0, max_objects: int = 16,
                 min_pixels: int = 16, train: bool = True) -> None:
        self.scaled, self.inst = scaled, scene.instances
        self.r0, self.r1 = rows
        self.crop = int(min(crop, self.r1 - self.r0, scaled.shape[2]))
        self.seed, self.jitter, self.max_objects, self.min_pixels = seed, jitter, max_objects, min_pixels
        self.train = train
        self.epoch = 0
        if train:
            self.origins = [None] * samples
        else:
            ys = _grid(self.r0, self.r1, self.crop)
            xs = _grid(0, scaled.shape[2], self.crop)
            self.origins = [(y, x) for y in ys for x in xs if self._ids(y, x).size]
        if not self.origins or (train and not self._any_object()):
            raise DataError(f"no object of at least {min_pixels} px in rows {self.r0}..{self.r1} of the scene")

    def _any_object(self) -> bool:
        ids, counts = np.unique(self.inst[self.r0:self.r1], return_counts=True)
        return bool(((ids > 0) & (counts >= self.min_pixels)).any())

    def _ids(self, y: int, x: int) -> np.ndarray:
        win = self.inst[y:y + self.crop, x:x + self.crop]
        ids, counts = np.unique(win, return_counts=True)
        return ids[(ids > 0) & (counts >= self.min_pixels)]

    def __len__(self) -> int:
        return len(self.origins)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.train else None
        if self.train:
            for _ in range(50):
                y = int(rng.integers(self.r0, self.r1 - self.crop + 1))
                x = int(rng.integers(0, self.scaled.shape[2] - self.crop + 1))
                ids = self._ids(y, x)
                if ids.size:
                    break
            else:
                raise DataError(f"could not find a {self.crop} px crop with an object after 50 tries")
            if ids.size > self.max_objects:
                ids = rng.choice(ids, self.max_objects, replace=False)
        else:
            y, x = self.origins[index]
            ids = self._ids(y, x)[: self.max_objects]
        inst = self.inst[y:y + self.crop, x:x + self.crop]
        masks, boxes, points = object_prompts(inst, ids, rng, self.jitter if self.train else 0)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(self.scaled[:, y:y + self.crop, x:x + self.crop])),
            "masks": torch.from_numpy(masks), "boxes": torch.from_numpy(boxes),
            "points": torch.from_numpy(points), "point_labels": torch.ones(len(ids), 1),
        }


def _grid(start: int, stop: int, size: int) -> list[int]:
    if stop - start <= size:
        return [start]
    starts = list(range(start, stop - size + 1, size))
    if starts[-1] != stop - size:
        starts.append(stop - size)
    return starts


def collate_prompts(items: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Images stacked; per-image prompt and mask tensors kept as lists."""
    out: dict[str, Any] = {"image": torch.stack([it["image"] for it in items])}
    for key in ("masks", "boxes", "points", "point_labels"):
        out[key] = [it[key] for it in items]
    return out


# --------------------------------------------------------------------------------------------
# semantic tiles


def read_tile(path: str | Path) -> np.ndarray:
    """An image or label tile as ``(bands, H, W)``."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning
    import warnings

    if not Path(path).is_file():
        raise DataError(f"{path}: file not found")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            return src.read()


def label_lut(labels: np.ndarray, class_ids: list[int]) -> np.ndarray:
    """Label values → 0-based class index, ``IGNORE`` for values that are not classes."""
    lut = np.full(max(int(labels.max()), max(class_ids)) + 1, IGNORE, dtype=np.int64)
    lut[class_ids] = np.arange(len(class_ids))
    return lut[labels]


class SemanticCrops(Dataset):
    """Random (training) or whole-tile (evaluation) crops of image/label tiles."""

    def __init__(self, images: list[np.ndarray], targets: list[np.ndarray], crop: int, *, samples: int = 0,
                 seed: int = 0, train: bool = True) -> None:
        self.images, self.targets, self.seed, self.train = images, targets, seed, train
        self.crop = int(min([crop] + [min(t.shape) for t in targets]))
        self.epoch = 0
        if train:
            self.items: list[tuple[int, int, int]] = [(-1, -1, -1)] * samples
        else:
            self.items = [(i, y, x) for i, t in enumerate(targets)
                          for y in _grid(0, t.shape[0], self.crop) for x in _grid(0, t.shape[1], self.crop)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            i = int(rng.integers(len(self.images)))
            h, w = self.targets[i].shape
            y, x = int(rng.integers(0, h - self.crop + 1)), int(rng.integers(0, w - self.crop + 1))
        else:
            i, y, x = self.items[index]
        c = self.crop
        img = np.ascontiguousarray(self.images[i][:, y:y + c, x:x + c])
        tgt = np.ascontiguousarray(self.targets[i][y:y + c, x:x + c])
        return torch.from_numpy(img), torch.from_numpy(tgt)
