"""The types every cube reader returns (:class:`HSICube`, :class:`LabelMap`) and the path rules they share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.errors import DataError


@dataclass
class HSICube:
    """A hyperspectral cube with optional georeferencing."""

    data: np.ndarray
    """``(H, W, Bands)`` array in the file's native dtype."""
    band_names: list[str] = field(default_factory=list)
    wavelengths: list[float] | None = None
    nodata: float | None = None
    crs: Any = None
    """A ``rasterio.crs.CRS`` or None."""
    transform: Any = None
    """An ``affine.Affine`` or None."""
    path: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]

    @property
    def height(self) -> int:
        return int(self.data.shape[0])

    @property
    def width(self) -> int:
        return int(self.data.shape[1])

    @property
    def bands(self) -> int:
        return int(self.data.shape[2])

    @property
    def georeferenced(self) -> bool:
        """True when the cube has a CRS (and hence maps to places on the Earth)."""
        return self.crs is not None

    def georef_note(self) -> str:
        """One line saying where this cube sits, or clearly that it has no CRS."""
        if self.crs is None:
            return (
                f"{self.path or 'cube'} has no CRS: outputs will be in pixel coordinates only "
                "(not georeferenced)"
            )
        return f"{self.path or 'cube'}: CRS {self.crs}, transform {tuple(self.transform)[:6]}"


@dataclass
class LabelMap:
    """A 2-D integer label map (0 = unlabelled by convention) with optional georeferencing."""

    data: np.ndarray
    nodata: float | None = None
    crs: Any = None
    transform: Any = None
    path: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None


# --------------------------------------------------------------------------------------------
# path handling


def split_spec(spec: str | Path) -> tuple[Path, str | None]:
    """Split ``PATH:KEY`` into a path and a key (the key only when PATH names a file)."""
    text = str(spec)
    if ":" in text:
        head, _, key = text.rpartition(":")
        # "C:\\x" style drive letters and plain paths that exist are not split.
        if key and "/" not in key and "\\" not in key and len(head) > 1:
            return resolve_path(head), key
    return resolve_path(text), None


def resolve_path(path: str | Path) -> Path:
    """Return ``path``; a missing relative path is retried beside the ``geolesf`` package."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p
    alt = Path(__file__).resolve().parents[2] / p
    return alt if alt.exists() else p


def require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise DataError(f"{path}: {what} file not found")


# --------------------------------------------------------------------------------------------
# MATLAB
