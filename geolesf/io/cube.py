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
    def dtype(self) -> np.dtype:
        return self.data.dtype

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
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a file ({what})")
    if not path.is_file():
        raise DataError(f"{path}: {what} file not found")


# --------------------------------------------------------------------------------------------
# memory budget

BUDGET_ENV = "GEOLESF_MAX_ARRAY_BYTES"
"""Largest array (bytes) a whole-cube reader may allocate; default: half the RAM, at most 16 GiB."""


def array_budget() -> int:
    """The memory budget of one in-memory array read from a file (``$GEOLESF_MAX_ARRAY_BYTES``)."""
    import os

    text = os.environ.get(BUDGET_ENV, "").strip()
    if text:
        try:
            value = int(float(text))
        except ValueError:
            raise DataError(f"{BUDGET_ENV}={text!r}: expected a number of bytes") from None
        if value < 1:
            raise DataError(f"{BUDGET_ENV}={text!r}: expected a positive number of bytes")
        return value
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 32 << 30
    return int(min(16 << 30, ram // 2))


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


def check_budget(nbytes: int, where: str, shape: Any = None) -> None:
    """Refuse (:class:`DataError`) an array of ``nbytes`` above :func:`array_budget`, before allocating it."""
    budget = array_budget()
    if nbytes > budget:
        dims = f" {tuple(shape)}" if shape is not None else ""
        raise DataError(f"{where}: array{dims} needs {_gib(nbytes)} in memory, over the budget of {_gib(budget)} "
                        f"(set {BUDGET_ENV} to raise it)")


# --------------------------------------------------------------------------------------------
# MATLAB
