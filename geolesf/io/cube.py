"""The types every cube reader returns (:class:`HSICube`, :class:`LabelMap`) and the path rules they share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.errors import DataError


@dataclass
class HSICube:
    """A hyperspectral cube with optional georeferencing and spectral metadata.

    Sensor products (:mod:`geolesf.io.sensors`) whose metadata defines a scale return ``data`` as
    float32 *physical* values (surface reflectance, ``DN × scale + offset``) and record the
    ``scale``/``offset`` they applied; every other reader returns the file's native values and leaves
    both None.
    """

    data: np.ndarray
    """``(H, W, Bands)`` array: the file's native dtype, or float32 when ``scale`` was applied."""
    band_names: list[str] = field(default_factory=list)
    wavelengths: list[float] | None = None
    """Band centre wavelengths in nm (converted from µm where the source states µm)."""
    nodata: float | None = None
    crs: Any = None
    """A ``rasterio.crs.CRS`` or None."""
    transform: Any = None
    """An ``affine.Affine`` or None."""
    path: str = ""
    fwhm: list[float] | None = None
    """Band full width at half maximum in nm."""
    scale: list[float] | None = None
    """Per-band gain already applied to ``data`` (None: native values)."""
    offset: list[float] | None = None
    """Per-band offset already applied to ``data``."""
    valid: np.ndarray | None = None
    """``(H, W)`` bool: pixels that are neither nodata nor flagged by the product's quality layers
    (their values are ``nodata``); None when the reader knows of no invalid pixel."""
    quality: dict[str, Any] = field(default_factory=dict)
    """What the validity came from: ``{"layers": [...], "flagged_pixels": n, ...}``."""
    acquired: str | None = None
    """Acquisition start as an ISO 8601 datetime string, when the product metadata gives it."""
    sensor: str | None = None
    """Product name (``EnMAP L2A``, ``PRISMA L2D``, ``AVIRIS-NG L2``, ...), None for plain files."""

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


def drop_invalid_labels(cube: HSICube, labels: Any) -> int:
    """Unlabel (0) the labelled pixels that the cube marks invalid (nodata or quality-flagged); returns
    their count and warns when there are any."""
    if cube.valid is None:
        return 0
    hit = (labels.data > 0) & ~cube.valid
    count = int(hit.sum())
    if count:
        import warnings

        labels.data = np.where(hit, 0, labels.data)
        warnings.warn(f"{labels.path or 'labels'}: {count:,} labelled pixels are nodata or flagged by the quality "
                      f"layers of {cube.path}; they are left out", UserWarning, stacklevel=2)
    return count


def wavelength_tags(wavelengths: list[float] | None) -> dict[str, str]:
    """GeoTIFF tags naming the input wavelengths (nm) a product was made from; empty without them."""
    if not wavelengths:
        return {}
    return {"input_wavelengths_nm": ",".join(f"{w:g}" for w in wavelengths)}


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
