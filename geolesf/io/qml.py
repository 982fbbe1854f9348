"""QGIS ``.qml`` style documents, and writing one beside a file (QGIS loads ``map.qml`` beside ``map.tif``).

* :func:`raster_qml` — a *paletted* raster renderer with one entry per real class (value, colour,
  name). A GeoTIFF colour table alone always has 256 entries, so without this sidecar QGIS shows a
  legend of 256 unnamed classes.
* :func:`vector_qml` — a *categorised* renderer on the ``class_id`` field, one solid fill per class.
* :func:`probability_qml` — a *single-band pseudocolour* renderer for a per-class probability raster:
  without it QGIS draws the first three probability bands as an RGB image.

A file format like the others in :mod:`geolesf.io`: writers (class-map GeoTIFFs, the predictors' COGs)
and exporters (GeoPackages with embedded ``layer_styles``, :mod:`geolesf.export.qgis`) all use it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geolesf.colors import hex_to_rgb as _rgb
from geolesf.colors import to_hex as _hex
from geolesf.io.atomic import atomic_path

QGIS_VERSION = "3.22.0-Białowieża"


def _root(categories: str) -> ET.Element:
    return ET.Element("qgis", {"version": QGIS_VERSION, "styleCategories": categories})


def _tostring(root: ET.Element) -> str:
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + body + "\n"


def raster_qml(class_ids: Sequence[int], class_names: Sequence[str], colors: Sequence[Any], band: int = 1) -> str:
    """Paletted-renderer QML for a class-map raster."""
    root = _root("AllStyleCategories")
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(pipe, "rasterrenderer", {
        "type": "paletted", "band": str(band), "opacity": "1", "alphaBand": "-1", "nodataColor": "",
    })
    ET.SubElement(renderer, "rasterTransparency")
    mm = ET.SubElement(renderer, "minMaxOrigin")
    for tag, text in (("limits", "None"), ("extent", "WholeRaster"), ("statAccuracy", "Estimated"),
                      ("cumulativeCutLower", "0.02"), ("cumulativeCutUpper", "0.98"), ("stdDevFactor", "2")):
        ET.SubElement(mm, tag).text = text
    palette = ET.SubElement(renderer, "colorPalette")
    for cid, name, col in zip(class_ids, class_names, colors):
        ET.SubElement(palette, "paletteEntry", {
            "value": str(int(cid)), "color": _hex(col), "alpha": "255", "label": str(name),
        })
    ET.SubElement(pipe, "brightnesscontrast", {"brightness": "0", "contrast": "0", "gamma": "1"})
    ET.SubElement(pipe, "huesaturation", {
        "saturation": "0", "grayscaleMode": "0", "colorizeOn": "0", "colorizeRed": "255",
        "colorizeGreen": "128", "colorizeBlue": "128", "colorizeStrength": "100", "invertColors": "0",
    })
    ET.SubElement(pipe, "rasterresampler", {"maxOversampling": "2"})
    ET.SubElement(pipe, "resamplingStage").text = "resamplingFilter"
    ET.SubElement(root, "blendMode").text = "0"
    return _tostring(root)


# viridis at 0, 0.25, 0.5, 0.75, 1 (matplotlib's values, rounded): perceptually uniform, colour-blind safe
PROBABILITY_RAMP = ((0.0, "#440154"), (0.25, "#3b528b"), (0.5, "#21918c"), (0.75, "#5ec962"), (1.0, "#fde725"))


def probability_qml(class_names: Sequence[str], band: int = 1) -> str:
    """Single-band pseudocolour QML for a probability raster (one band per class, values 0..1).

    Why one band and not a multiband style: the bands are independent per-class probabilities,
    not colour channels; an RGB composite of three of them is unreadable. QGIS shows ``band``
    (default the first class) with a fixed 0..1 viridis ramp, so the same colour means the same
    probability on every band; choosing another band in the layer properties keeps the ramp. The
    band names (``p(class)``) are the GeoTIFF band descriptions; the style's title names the class
    shown. A uint8 probability COG stores ``round(p * 254)`` with band scale ``1/254``; QGIS applies
    the scale when reading, so the 0..1 range holds for both storage types.
    """
    if not 1 <= band <= len(class_names):
        raise ValueError(f"band {band} is not among the {len(class_names)} class bands")
    root = _root("AllStyleCategories")
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(pipe, "rasterrenderer", {
        "type": "singlebandpseudocolor", "band": str(band), "opacity": "1", "alphaBand": "-1",
        "classificationMin": "0", "classificationMax": "1", "nodataColor": "",
    })
    ET.SubElement(renderer, "rasterTransparency")
    mm = ET.SubElement(renderer, "minMaxOrigin")
    for tag, text in (("limits", "None"), ("extent", "WholeRaster"), ("statAccuracy", "Estimated"),
                      ("cumulativeCutLower", "0.02"), ("cumulativeCutUpper", "0.98"), ("stdDevFactor", "2")):
        ET.SubElement(mm, tag).text = text
    shader = ET.SubElement(ET.SubElement(renderer, "rastershader"), "colorrampshader", {
        "colorRampType": "INTERPOLATED", "classificationMode": "1", "clip": "0", "minimumValue": "0",
        "maximumValue": "1", "labelPrecision": "2",
    })
    for value, colour in PROBABILITY_RAMP:
        label = f"p({class_names[band - 1]}) = {value:.2f}" if value in (0.0, 1.0) else f"{value:.2f}"
        ET.SubElement(shader, "item", {"value": str(value), "color": colour, "alpha": "255", "label": label})
    ET.SubElement(pipe, "brightnesscontrast", {"brightness": "0", "contrast": "0", "gamma": "1"})
    ET.SubElement(pipe, "rasterresampler", {"maxOversampling": "2"})
    ET.SubElement(root, "blendMode").text = "0"
    return _tostring(root)


def _fill_symbol(parent: ET.Element, name: str, colour: Any, outline_mm: float | None = None) -> None:
    """A SimpleFill symbol: solid fill in ``colour``, or (``outline_mm``) only an outline in it."""
    r, g, b = _rgb(colour)
    symbol = ET.SubElement(parent, "symbol", {
        "type": "fill", "name": name, "alpha": "1", "clip_to_extent": "1", "force_rhr": "0",
    })
    layer = ET.SubElement(symbol, "layer", {"class": "SimpleFill", "enabled": "1", "locked": "0", "pass": "0"})
    if outline_mm is None:
        fill = {"color": f"{r},{g},{b},255", "style": "solid", "outline_style": "no",
                "outline_color": "35,35,35,255", "outline_width": "0.26", "joinstyle": "bevel"}
    else:
        fill = {"color": f"{r},{g},{b},0", "style": "no", "outline_style": "solid",
                "outline_color": f"{r},{g},{b},255", "outline_width": str(outline_mm), "joinstyle": "miter"}
    props = {
        **fill, "outline_width_unit": "MM", "border_width_map_unit_scale": "3x:0,0,0,0,0,0",
        "offset": "0,0", "offset_unit": "MM", "offset_map_unit_scale": "3x:0,0,0,0,0,0",
    }
    option = ET.SubElement(layer, "Option", {"type": "Map"})
    for k, v in props.items():
        ET.SubElement(option, "Option", {"name": k, "type": "QString", "value": v})
    for k, v in props.items():
        ET.SubElement(layer, "prop", {"k": k, "v": v})


def vector_qml(class_ids: Sequence[int], class_names: Sequence[str], colors: Sequence[Any],
               field: str = "class_id", outline_mm: float | None = None) -> str:
    """Categorised-renderer QML on ``field``: one solid fill per class for polygons, or with
    ``outline_mm`` one outline-only symbol per class (e.g. detection boxes over imagery)."""
    root = _root("Symbology|Labeling")
    renderer = ET.SubElement(root, "renderer-v2", {
        "type": "categorizedSymbol", "attr": field, "symbollevels": "0", "enableorderby": "0",
        "forceraster": "0", "referencescale": "-1",
    })
    cats = ET.SubElement(renderer, "categories")
    symbols = ET.SubElement(renderer, "symbols")
    for k, (cid, name, col) in enumerate(zip(class_ids, class_names, colors)):
        ET.SubElement(cats, "category", {
            "value": str(int(cid)), "symbol": str(k), "label": str(name), "render": "true", "type": "integer",
        })
        _fill_symbol(symbols, str(k), col, outline_mm)
    ET.SubElement(root, "blendMode").text = "0"
    ET.SubElement(root, "layerGeometryType").text = "2"
    return _tostring(root)


def write_qml(path: str | Path, qml: str) -> Path:
    """Write a ``.qml`` atomically (temp beside, then rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(qml, encoding="utf-8")
    return path
