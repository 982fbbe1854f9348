"""Class colours: parsing ``#rrggbb`` / RGB triples, formatting them, and a default palette.

One home for colour handling, so writers, exporters and the xarray accessor need not import each
other (or the predictor) for a colour helper.
"""

from __future__ import annotations

import colorsys
from typing import Any

from geolesf.errors import DataError

RGB = tuple[int, int, int]

# Kelly's colours of maximum contrast (without white and black), for the first 20 classes.
_KELLY = (
    0xF3C300, 0x875692, 0xF38400, 0xA1CAF1, 0xBE0032, 0xC2B280, 0x848482, 0x008856, 0xE68FAC,
    0x0067A5, 0xF99379, 0x604E97, 0xF6A600, 0xB3446C, 0xDCD300, 0x882D17, 0x8DB600, 0x654522,
    0xE25822, 0x2B3D26,
)


def default_palette(n: int) -> list[RGB]:
    """``n`` distinct RGB colours: Kelly's 20 contrast colours, then golden-ratio hue steps."""
    colours: list[RGB] = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in _KELLY[:n]]
    for i in range(len(colours), n):
        hue = (i * 0.618033988749895) % 1.0
        light = 0.45 if i % 2 == 0 else 0.6
        r, g, b = colorsys.hls_to_rgb(hue, light, 0.75)
        colours.append((int(round(r * 255)), int(round(g * 255)), int(round(b * 255))))
    return colours


def hex_to_rgb(c: Any) -> RGB:
    """``"#rrggbb"`` or an RGB(A) sequence → ``(r, g, b)``; a :class:`DataError` for other strings."""
    if isinstance(c, str):
        s = c.lstrip("#")
        if len(s) != 6:
            raise DataError(f"colour '{c}' is not #rrggbb")
        return int(s[0:2], 16), int(s[2:4], 16), int(s[4:6], 16)
    r, g, b = (int(v) for v in tuple(c)[:3])
    return r, g, b


def to_hex(c: Any, upper: bool = False) -> str:
    """Any colour :func:`hex_to_rgb` accepts → ``"#rrggbb"`` (``"#RRGGBB"`` with ``upper``)."""
    r, g, b = hex_to_rgb(c)
    text = f"#{r:02x}{g:02x}{b:02x}"
    return text.upper() if upper else text
