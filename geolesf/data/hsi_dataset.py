"""Hyperspectral datasets: a torchgeo raster dataset and pixel-centred patch samples.

- :class:`HSIRasterDataset` — a torchgeo :class:`~torchgeo.datasets.RasterDataset` over
  georeferenced HSI GeoTIFF cubes, so scenes can be queried by coordinates with torchgeo's
  samplers (``GridGeoSampler``, ``RandomGeoSampler``).
- :class:`PatchDataset` — the per-pixel samples of S²Mamba-style classifiers: the ``P×P``
  neighbourhood of each listed pixel, all bands, from a padded (normalised) cube.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchgeo.datasets import RasterDataset

from geolesf.errors import DataError

PADDING_MODES = {"symmetric": "symmetric", "reflect": "reflect", "zero": "constant"}


class HSIRasterDataset(RasterDataset):
    """Georeferenced hyperspectral GeoTIFF cubes (one or more files, bands in one file).

    Samples are ``{"image": (Bands, h, w) float32, "crs", "bounds"}``. Pass ``band_names`` (all
    bands, in file order) to allow choosing a subset with ``bands=``.
    """

    filename_glob = "*.tif"
    is_image = True

    def __init__(
        self,
        paths: Any,
        crs: Any = None,
        res: float | tuple[float, float] | None = None,
        bands: Sequence[str] | None = None,
        band_names: Sequence[str] | None = None,
        transforms: Any = None,
        cache: bool = True,
    ) -> None:
        if band_names is not None:
            self.all_bands = tuple(band_names)
        try:
            super().__init__(paths, crs=crs, res=res, bands=bands, transforms=transforms, cache=cache)
        except Exception as exc:
            if exc.__class__.__name__ == "DatasetNotFoundError":
                raise DataError(f"no GeoTIFF cube found in {paths}") from None
            raise
        if self.index.crs is None:
            raise DataError(f"{paths}: HSIRasterDataset needs georeferenced rasters (no CRS found)")


def pad_cube(cube: np.ndarray, radius: int, padding: str = "symmetric") -> np.ndarray:
    """Pad an ``(H, W, B)`` cube by ``radius`` pixels on both spatial sides.

    ``symmetric`` repeats the edge pixel (numpy ``symmetric``, as the S²Mamba code), ``reflect``
    mirrors without repeating it, ``zero`` pads with zeros.
    """
    if padding not in PADDING_MODES:
        raise DataError(f"unknown padding '{padding}' (choose {', '.join(PADDING_MODES)})")
    if radius == 0:
        return cube
    if padding == "reflect" and radius >= min(cube.shape[:2]):
        raise DataError(f"reflect padding of {radius} px needs a cube larger than {cube.shape[:2]}")
    return np.pad(cube, ((radius, radius), (radius, radius), (0, 0)), mode=PADDING_MODES[padding])


class PatchDataset(Dataset):
    """``P×P`` patches centred on given pixels: ``(Bands, P, P)`` float32 and a class index.

    ``pixels`` is ``(N, 2)`` (row, col); ``labels`` holds 0-based class indices (or None, then
    the returned label is -1). ``cube`` is ``(H, W, Bands)``, already normalised.
    """

    def __init__(
        self,
        cube: np.ndarray,
        pixels: np.ndarray | Sequence[tuple[int, int]],
        labels: np.ndarray | Sequence[int] | None = None,
        patch_size: int = 7,
        padding: str = "symmetric",
    ) -> None:
        if patch_size < 1 or patch_size % 2 == 0:
            raise DataError(f"patch size must be a positive odd number, found {patch_size}")
        cube = np.asarray(cube)
        if cube.ndim != 3:
            raise DataError(f"expected an (H, W, Bands) cube, found shape {cube.shape}")
        self.pixels = np.asarray(pixels, dtype=np.int64).reshape(-1, 2)
        h, w = cube.shape[:2]
        if self.pixels.size and (
            self.pixels.min() < 0 or self.pixels[:, 0].max() >= h or self.pixels[:, 1].max() >= w
        ):
            raise DataError(f"pixel coordinates fall outside the {h}×{w} cube")
        if labels is None:
            self.labels = np.full(len(self.pixels), -1, dtype=np.int64)
        else:
            self.labels = np.asarray(labels, dtype=np.int64).ravel()
            if len(self.labels) != len(self.pixels):
                raise DataError(f"{len(self.labels)} labels for {len(self.pixels)} pixels")
        self.patch_size = patch_size
        self.radius = patch_size // 2
        # Bands first once, so every patch is a contiguous-ish slice without a transpose per item.
        padded = pad_cube(cube.astype(np.float32, copy=False), self.radius, padding)
        self.padded = torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1)))

    @classmethod
    def from_mask(
        cls, cube: np.ndarray, mask: np.ndarray, class_index: np.ndarray | None = None, **kwargs: Any
    ) -> PatchDataset:
        """Patches for every True pixel of ``mask`` (row-major), labels from ``class_index``."""
        pixels = np.argwhere(np.asarray(mask, dtype=bool))
        labels = None if class_index is None else np.asarray(class_index)[pixels[:, 0], pixels[:, 1]]
        return cls(cube, pixels, labels, **kwargs)

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        r, c = self.pixels[i]
        p = self.patch_size
        patch = self.padded[:, r : r + p, c : c + p].clone()
        return patch, int(self.labels[i])
