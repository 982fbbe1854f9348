"""Images for H-CLIP shared by training and evaluation: short-side resizing and the training crops.

Nothing here imports Lightning: :mod:`geolesf.methods.hclip.evaluate` resizes with :func:`_resize_short`
without loading the training code.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _resize_short(image: np.ndarray, mask: np.ndarray | None, short: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``image`` (``H×W×3``) and ``mask`` resized so that the short side is ``short`` (bilinear / nearest)."""
    import cv2

    h, w = image.shape[:2]
    s = short / min(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    img = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    m = None if mask is None else cv2.resize(mask.astype(np.int32), size, interpolation=cv2.INTER_NEAREST)
    return img, None if m is None else m.astype(np.int64)



class CropDataset:
    """Training view of a benchmark: resize, random crop, flip; tensors (3, c, c) uint8 and (c, c) int64."""

    def __init__(self, dataset: Any, crop: int, seed: int = 0, max_images: int | None = None) -> None:
        self.ds, self.crop, self.seed = dataset, crop, seed
        self.n = len(dataset) if max_images is None else min(len(dataset), max_images)
        self.ignore = int(dataset.ignore_index)
        self.calls = 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        import torch

        rng = np.random.default_rng((self.seed, i, self.calls))
        self.calls += 1
        s = self.ds[i]
        img, mask = _resize_short(s["image"], s["mask"], self.crop)
        h, w = mask.shape
        y = int(rng.integers(0, h - self.crop + 1))
        x = int(rng.integers(0, w - self.crop + 1))
        img, mask = img[y:y + self.crop, x:x + self.crop], mask[y:y + self.crop, x:x + self.crop]
        if rng.random() < 0.5:
            img, mask = img[:, ::-1], mask[:, ::-1]
        return (torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))),
                torch.from_numpy(np.ascontiguousarray(mask)))
