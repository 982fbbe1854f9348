"""Datasets for weakly supervised segmentation: image-level tags + the dense masks used only for scoring.

:func:`open_dataset` gives one interface over VOC 2012 (+ SBD aug lists), COCO 2014/2017 and the
aerial tag tiles: samples ``dict(image uint8 (H, W, 3), mask int64 (H, W), labels float32 (C,),
name)`` where ``mask`` indexes :attr:`WSSSDataset.class_names` (255 = ignore) and ``labels`` are
the image-level tags over the ``C`` foreground classes. With a background class (VOC, COCO), mask
value ``k ≥ 1`` is tag ``k − 1``; without one (aerial land cover), mask value ``k`` is tag ``k``.
The masks never reach the training losses: only ``labels`` do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from geolesf.errors import ConfigError, DataError

DATASETS = ("voc2012", "coco2014", "coco2017", "loveda", "potsdam", "vaihingen")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_DEFAULT_ROOTS = {"voc2012": "voc_samples/deeplabv3plus_val", "coco2014": "coco_samples",
                  "coco2017": "coco_samples", "loveda": "rs_seg_tiles", "potsdam": "rs_seg_tiles",
                  "vaihingen": "rs_seg_tiles"}


@dataclass
class WSSSDataset:
    """A benchmark wrapped with its class layout."""

    name: str
    source: Any
    class_names: list[str]
    """Names of the mask values ``0..K-1``."""
    class_ids: list[int]
    """The id each mask value has in the dataset's own files (VOC 0..20, LoveDA 1..7, ...)."""
    background: bool

    @property
    def fg_names(self) -> list[str]:
        return self.class_names[1:] if self.background else list(self.class_names)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = dict(self.source[index])
        if "labels" not in s:
            s["labels"] = tags_of_mask(s["mask"], len(self.fg_names), self.background)
        return s


def tags_of_mask(mask: np.ndarray, num_fg: int, background: bool) -> np.ndarray:
    """Image-level tags from a contiguous-index mask (every non-ignore, non-background class present)."""
    labels = np.zeros(num_fg, dtype=np.float32)
    off = 1 if background else 0
    for v in np.unique(mask):
        k = int(v) - off
        if 0 <= k < num_fg:
            labels[k] = 1.0
    return labels


def default_root(name: str) -> Path:
    data = os.environ.get("GEOLESF_DATA")
    if not data:
        raise ConfigError(f"data.root is not set for dataset '{name}' and GEOLESF_DATA is not set")
    return Path(data) / _DEFAULT_ROOTS[name]


def open_dataset(name: str, root: str | Path | None = None, split: str = "train", **options: Any) -> WSSSDataset:
    """Open a WSSS benchmark; ``options`` go to the loader (annotation_file, tile, downsample, ...)."""
    if name not in DATASETS:
        raise ConfigError(f"data.dataset must be one of {', '.join(DATASETS)}, found '{name}'")
    if root and "$" in str(root):
        raise ConfigError(f"data.root {root}: an environment variable in it is not set (e.g. GEOLESF_DATA)")
    root = Path(root) if root else default_root(name)
    if name == "voc2012":
        from geolesf.data.benchmarks.voc import VOC_CLASSES, VOCSegmentation

        _only(options, (), name)
        src = VOCSegmentation(root, split)
        return WSSSDataset(name, src, list(VOC_CLASSES), list(range(len(VOC_CLASSES))), True)
    if name.startswith("coco"):
        from geolesf.data.benchmarks.coco_seg import COCOSegmentation

        _only(options, ("annotation_file", "image_dir", "crowd"), name)
        if "annotation_file" not in options and (root / "test_coco.json").is_file():
            options["annotation_file"] = root / "test_coco.json"
        year = name[-4:]
        sp = split if split.endswith(year) else f"{split}{year}"
        src = COCOSegmentation(root, sp, **options)
        return WSSSDataset(name, src, list(src.class_names), [0, *src.cat_ids], True)
    from geolesf.data.benchmarks.aerial_tags import AerialTagTiles

    _only(options, ("tile", "downsample", "min_fraction", "tags_file", "names"), name)
    src = AerialTagTiles(root, name, **options)
    return WSSSDataset(name, src, list(src.class_names), list(src.class_ids), False)


def _only(options: dict[str, Any], allowed: tuple[str, ...], name: str) -> None:
    extra = sorted(k for k, v in options.items() if k not in allowed and v is not None)
    if extra:
        raise ConfigError(f"data: option(s) {', '.join(extra)} do not apply to dataset '{name}'")
    for k in [k for k, v in options.items() if v is None]:
        del options[k]


def to_tensor(image: np.ndarray, mean: tuple[float, ...] = IMAGENET_MEAN,
              std: tuple[float, ...] = IMAGENET_STD) -> torch.Tensor:
    """``(H, W, 3)`` uint8 → normalised ``(3, H, W)`` float32."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


class TrainCrops(Dataset):
    """Random-rescale, random-crop (padded with the mean), random-flip training views with their tags."""

    def __init__(self, ds: WSSSDataset, crop: int, scale_range: tuple[float, float] = (0.7, 1.3),
                 mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD,
                 seed: int = 0, limit: int | None = None) -> None:
        self.ds, self.crop, self.scale_range = ds, int(crop), tuple(scale_range)
        self.mean, self.std = mean, std
        self.indices = list(range(len(ds)))[: limit or None]
        if not self.indices:
            raise DataError(f"dataset {ds.name} has no training samples")
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from torch.nn import functional as F

        s = self.ds[self.indices[i]]
        x = to_tensor(s["image"], self.mean, self.std)[None]
        lo, hi = self.scale_range
        f = float(self.rng.uniform(lo, hi)) if hi > lo else lo
        if f != 1.0:
            size = (max(8, int(round(x.shape[-2] * f))), max(8, int(round(x.shape[-1] * f))))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        x = x[0]
        c = self.crop
        h, w = x.shape[-2:]
        if h < c or w < c:
            x = F.pad(x, (0, max(0, c - w), 0, max(0, c - h)))  # zero = the mean after normalisation
            h, w = x.shape[-2:]
        r0 = int(self.rng.integers(0, h - c + 1))
        c0 = int(self.rng.integers(0, w - c + 1))
        x = x[:, r0:r0 + c, c0:c0 + c]
        if self.rng.random() < 0.5:
            x = x.flip(-1)
        return x.contiguous(), torch.from_numpy(np.asarray(s["labels"], dtype=np.float32))
