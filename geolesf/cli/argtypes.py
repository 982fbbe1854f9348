"""argparse ``type=`` validators: a bad number or device is refused at parse time, in one line.

Only the standard library is imported here (torch only when a CUDA device is asked for), so
``geolesf --help`` stays fast.
"""

from __future__ import annotations

import argparse
import re
from typing import Any


def _parse(text: str, cast: type, what: str) -> Any:
    try:
        return cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, found {text!r}") from None


def _int(text: str) -> int:
    return _parse(text, int, "an integer")


def positive_int(text: str) -> int:
    """An integer ≥ 1 (epochs, batch size, tile, workers, ...)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, found {value}")
    return value


def tile_size(text: str) -> int | str:
    """``auto`` or a tile side in pixels (an integer ≥ 1)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number of pixels, found {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, found {value}")
    return value


def memory_size(text: str) -> int:
    """Bytes of a size such as ``2GiB``, ``512M`` or ``1500000000`` (powers of 1024)."""
    from geolesf.errors import ConfigError
    from geolesf.predict.autotile import parse_size

    try:
        return parse_size(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[-1]) from None


def non_negative_int(text: str) -> int:
    """An integer ≥ 0 (overlap, margin, retries)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, found {value}")
    return value


def _float(text: str) -> float:
    return _parse(text, float, "a number")


def positive_float(text: str) -> float:
    """A finite float > 0 (learning rate)."""
    value = _float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, found {text}")
    return value


def unit_interval(text: str) -> float:
    """A float in [0, 1] (a score margin)."""
    value = _float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, found {text}")
    return value


def fraction(text: str) -> float:
    """A float in (0, 1)."""
    value = _float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), found {text}")
    return value


_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


def device(text: str) -> str:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps``; a CUDA device must exist on this machine."""
    text = text.strip()
    if not _DEVICE.match(text):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}: expected cpu, cuda, cuda:N or mps")
    if text.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text} was asked for but no CUDA GPU is available here; "
                                             "use --device cpu")
        index = int(text.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif text == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError("mps was asked for but is not available here; use --device cpu")
    return text


def band_ranges(text: str) -> list[Any]:
    """``water,350-400`` → ``["water", [350.0, 400.0]]``: named band sets and wavelength ranges in nm."""
    out: list[Any] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        if item.isalpha():
            out.append(item.lower())
            continue
        lo, sep, hi = item.partition("-")
        try:
            low, high = float(lo), float(hi)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: expected a name such as 'water' or a range LOW-HIGH in nm") from None
        if not sep or not 0 <= low < high:
            raise argparse.ArgumentTypeError(f"{item!r}: expected a range LOW-HIGH in nm with LOW < HIGH")
        out.append([low, high])
    if not out:
        raise argparse.ArgumentTypeError("expected 'water' and/or wavelength ranges LOW-HIGH in nm")
    return out
