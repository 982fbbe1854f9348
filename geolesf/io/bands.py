"""Band selection: drop the water-vapour absorption bands, wavelength ranges or band numbers.

``data.drop_bands`` (``geolesf train --drop-bands``) is a list of items:

- ``water``: the bands whose centre lies in :data:`WATER_WINDOWS` (needs wavelengths);
- ``[LOW, HIGH]`` or ``"LOW-HIGH"``: a wavelength range in nm, both ends included (needs wavelengths);
- ``{band_numbers: [104, 105, ...]}``: 1-based band numbers (works without wavelengths).

:func:`select_bands` turns a spec into the kept band indices and a report (what was dropped and
why); :func:`apply_to_cube` applies it to an :class:`~geolesf.io.cube.HSICube`; the report is
recorded in ``metrics.json`` and the checkpoint, and :func:`apply_recorded` applies the same
selection to a scene at prediction time (refusing a scene with another band count).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from geolesf.errors import ConfigError, DataError

WATER_WINDOWS: tuple[tuple[float, float], ...] = ((1340.0, 1460.0), (1790.0, 1960.0))
"""Atmospheric water-vapour absorption windows (nm) around the saturated 1.38 µm and 1.87 µm bands
(Gao & Goetz 1990, *J. Geophys. Res.* 95(D4): the two bands where the atmosphere is nearly opaque).
They contain the Indian Pines AVIRIS bands 104–108 and 150–163 that the distributed 200-band cube
already lacks. The noisy tail above ~2450 nm is not part of ``water``: drop it with a range."""

NAMED: dict[str, tuple[tuple[float, float], ...]] = {"water": WATER_WINDOWS}


def _parse_item(item: Any) -> tuple[str, Any]:
    """One spec item → ("range", (lo, hi)) or ("numbers", [..]); ConfigError naming the item."""
    if isinstance(item, str):
        text = item.strip().lower()
        if text in NAMED:
            return "named", text
        lo, sep, hi = text.partition("-")
        try:
            if sep:
                return "range", _range(float(lo), float(hi), item)
        except ValueError:
            pass
        raise ConfigError(f"data.drop_bands: {item!r} is neither a band set ({', '.join(NAMED)}) nor a range LOW-HIGH in nm")
    if isinstance(item, dict) and set(item) == {"band_numbers"}:
        numbers = item["band_numbers"]
        if not isinstance(numbers, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1
                                                    for n in numbers):
            raise ConfigError(f"data.drop_bands: band_numbers must be a list of band numbers from 1, found {numbers!r}")
        return "numbers", sorted(set(numbers))
    if isinstance(item, (list, tuple)) and len(item) == 2:
        try:
            return "range", _range(float(item[0]), float(item[1]), item)
        except (TypeError, ValueError):
            pass
    raise ConfigError(f"data.drop_bands: cannot read {item!r}; expected 'water', [LOW, HIGH] in nm or "
                      "{band_numbers: [...]}")


def _range(lo: float, hi: float, item: Any) -> tuple[float, float]:
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 <= lo < hi):
        raise ConfigError(f"data.drop_bands: range {item!r} must have 0 <= LOW < HIGH (nm)")
    return lo, hi


def normalise_spec(spec: Any) -> list[Any]:
    """The spec as a list of items (a single string or range becomes a one-item list)."""
    if spec is None or spec == [] or spec == "":
        return []
    if isinstance(spec, str) or isinstance(spec, dict):
        return [spec]
    if isinstance(spec, (list, tuple)) and len(spec) == 2 and all(isinstance(v, (int, float)) and
                                                                 not isinstance(v, bool) for v in spec):
        return [list(spec)]
    if isinstance(spec, (list, tuple)):
        return list(spec)
    raise ConfigError(f"data.drop_bands: expected a list such as [water, [350, 400]], found {spec!r}")


def select_bands(wavelengths: Sequence[float] | None, spec: Any, bands: int | None = None,
                 where: str = "the cube") -> tuple[list[int], dict[str, Any]]:
    """``(keep, report)``: 0-based indices of the bands kept, and what was dropped for which item.

    ``bands`` is the band count (needed when there are no wavelengths). Refuses a wavelength item for
    a cube without wavelengths, and a spec that drops every band.
    """
    n = len(wavelengths) if wavelengths is not None else bands
    if n is None:
        raise ValueError("select_bands needs wavelengths or the band count")
    wl = None if wavelengths is None else np.asarray(wavelengths, dtype=np.float64)
    drop = np.zeros(n, bool)
    reasons: list[dict[str, Any]] = []
    for item in normalise_spec(spec):
        kind, value = _parse_item(item)
        if kind == "numbers":
            bad = [b for b in value if b > n]
            if bad:
                raise ConfigError(f"data.drop_bands: band numbers {bad} do not exist; {where} has {n} bands")
            hit = np.zeros(n, bool)
            hit[np.asarray(value) - 1] = True
        else:
            if wl is None:
                raise DataError(f"data.drop_bands: {item!r} needs band wavelengths and {where} has none; give a cube "
                                "with wavelengths (ENVI header, sensor product, GeoTIFF 'wavelength' tags) or drop "
                                "bands by number: {band_numbers: [...]}")
            windows = NAMED[value] if kind == "named" else (value,)
            hit = np.zeros(n, bool)
            for lo, hi in windows:
                hit |= (wl >= lo) & (wl <= hi)
        reasons.append({"item": item if not isinstance(item, tuple) else list(item),
                        "dropped_band_numbers": [int(i) + 1 for i in np.flatnonzero(hit & ~drop)]})
        drop |= hit
    keep = [int(i) for i in np.flatnonzero(~drop)]
    if not keep:
        raise ConfigError(f"data.drop_bands: {spec!r} drops all {n} bands of {where}")
    report = {
        "spec": normalise_spec(spec), "bands_in": int(n), "keep": keep,
        "dropped_band_numbers": [int(i) + 1 for i in np.flatnonzero(drop)], "by_item": reasons,
        "wavelengths_kept": None if wl is None else [float(wl[i]) for i in keep],
        "water_windows_nm": [list(w) for w in WATER_WINDOWS],
    }
    return keep, report


def apply_to_cube(cube: Any, spec: Any) -> tuple[Any, dict[str, Any]]:
    """``(cube with only the kept bands, report)``; the cube itself when nothing is dropped."""
    keep, report = select_bands(cube.wavelengths, spec, bands=cube.bands, where=cube.path or "the cube")
    if len(keep) == cube.bands:
        return cube, report
    if getattr(cube, "data", None) is None and hasattr(cube, "keep_bands"):  # a cube read through windows
        return cube.keep_bands(list(keep)), report

    def pick(values: Any) -> Any:
        return None if values is None else [values[i] for i in keep]

    out = dataclasses.replace(
        cube, data=np.ascontiguousarray(cube.data[:, :, keep]), band_names=pick(cube.band_names) or [],
        wavelengths=pick(cube.wavelengths), fwhm=pick(cube.fwhm), scale=pick(cube.scale), offset=pick(cube.offset),
    )
    return out, report


def check_record(record: Any, where: str) -> tuple[list[int], int] | None:
    """``(keep, bands_in)`` of a band-selection record from a checkpoint, None when there is none."""
    if record is None:
        return None
    try:
        keep = [int(i) for i in record["keep"]]
        bands_in = int(record["bands_in"])
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{where}: malformed band selection record") from None
    if not keep or min(keep) < 0 or max(keep) >= bands_in:
        raise DataError(f"{where}: band selection keeps bands {keep[:3]}… outside 0..{bands_in - 1}")
    return keep, bands_in


def apply_recorded(x: np.ndarray, record: Any, axis: int, source: str, where: str) -> np.ndarray:
    """Keep the recorded bands of ``x`` along ``axis``; a :class:`DataError` when its band count differs."""
    checked = check_record(record, where)
    if checked is None:
        return x
    keep, bands_in = checked
    if x.shape[axis] != bands_in:
        raise DataError(f"{source} has {x.shape[axis]} bands; the model was trained on {bands_in}-band scenes "
                        f"(keeping {len(keep)} after data.drop_bands)")
    if len(keep) == bands_in:
        return x
    return np.take(x, keep, axis=axis)


class RecordedBands:
    """What a checkpoint that recorded ``data.drop_bands`` offers the predictors (``extra["bands"]``).

    Mixed into the hsi checkpoints (patch and spectrum); they provide ``extra``, ``in_bands`` and ``path``.
    """

    extra: Any
    path: Any

    @property
    def band_selection(self) -> dict[str, Any] | None:
        """``extra["bands"]``: the ``data.drop_bands`` record (``keep``, ``bands_in``, wavelengths kept)."""
        record = self.extra.get("bands") if isinstance(self.extra, dict) else None
        return record if isinstance(record, dict) and "keep" in record else None

    @property
    def scene_bands(self) -> int:
        """Bands a scene must have: before band selection when the run dropped bands."""
        record = self.band_selection
        return int(record["bands_in"]) if record is not None else int(self.in_bands)  # type: ignore[attr-defined]

    def select_bands(self, cube: np.ndarray, axis: int, source: str) -> np.ndarray:
        """The recorded band selection applied to a scene (a :class:`DataError` when its band count differs)."""
        return apply_recorded(cube, self.band_selection, axis, source, str(self.path or "checkpoint"))
