"""Spectral feature transforms fitted on pixels: per-band z-score and PCA.

Strict protocols fit them on the training pixels only; the official S²Mamba code z-scores with
statistics of the whole scene (unsupervised, so it does not leak labels) — both are offered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from geolesf.errors import DataError


def _pixels(x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """``(N, Bands)`` spectra of ``x`` (``(H, W, B)`` or already ``(N, B)``) under ``mask``."""
    x = np.asarray(x)
    if x.ndim == 3:
        flat = x.reshape(-1, x.shape[2])
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != x.shape[:2]:
                raise DataError(f"mask shape {mask.shape} differs from the cube's {x.shape[:2]}")
            flat = flat[mask.ravel()]
        return flat
    if x.ndim == 2:
        return x if mask is None else x[np.asarray(mask, dtype=bool)]
    raise DataError(f"expected (H, W, Bands) or (N, Bands) data, found shape {x.shape}")


@dataclass
class BandNormalizer:
    """Per-band z-score ``(x − mean_b) / std_b`` (a constant band is only centred)."""

    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    fitted_on: str = ""

    def fit(self, x: np.ndarray, mask: np.ndarray | None = None, fitted_on: str = "") -> BandNormalizer:
        """Fit on the pixels of ``x`` selected by ``mask`` (all pixels when None)."""
        px = _pixels(x, mask).astype(np.float64)
        if px.shape[0] == 0:
            raise DataError("cannot fit band normalisation on zero pixels")
        self.mean = px.mean(axis=0)
        std = px.std(axis=0)
        self.std = np.where(std > 0, std, 1.0)
        self.fitted_on = fitted_on or ("all pixels" if mask is None else f"{px.shape[0]} pixels")
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        if self.mean is None or self.std is None:
            raise DataError("BandNormalizer.transform called before fit")
        x = np.asarray(x)
        if x.shape[-1] != self.mean.shape[0]:
            raise DataError(f"data has {x.shape[-1]} bands; the normaliser was fitted on {self.mean.shape[0]}")
        return ((x - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "zscore", "fitted_on": self.fitted_on, "bands": int(self.mean.shape[0]) if self.mean is not None else None}


class PCA:
    """Principal components fitted on (training) pixels, applied to whole cubes."""

    def __init__(self, n_components: int, seed: int = 0) -> None:
        if n_components < 1:
            raise DataError(f"PCA needs at least 1 component, found {n_components}")
        self.n_components = int(n_components)
        self.seed = seed
        self._pca: Any = None

    def fit(self, x: np.ndarray, mask: np.ndarray | None = None) -> PCA:
        from sklearn.decomposition import PCA as SkPCA

        px = _pixels(x, mask)
        limit = min(px.shape[0], px.shape[1])
        if self.n_components > limit:
            raise DataError(
                f"PCA: {self.n_components} components requested, but the fit data has "
                f"{px.shape[0]} pixels × {px.shape[1]} bands (at most {limit})"
            )
        self._pca = SkPCA(n_components=self.n_components, random_state=self.seed).fit(px)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        if self._pca is None:
            raise DataError("PCA.transform called before fit")
        x = np.asarray(x)
        flat = x.reshape(-1, x.shape[-1])
        out = self._pca.transform(flat).astype(np.float32)
        return out.reshape(*x.shape[:-1], self.n_components)

    @property
    def explained_variance_ratio(self) -> float:
        return float(self._pca.explained_variance_ratio_.sum()) if self._pca is not None else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"type": "pca", "components": self.n_components,
                "explained_variance_ratio": self.explained_variance_ratio}
