"""QGIS styles for geolesf outputs: ``.qml`` files and the GeoPackage ``layer_styles`` table.

* :func:`raster_qml` — a *paletted* raster renderer with one entry per real class (value, colour,
  name). A GeoTIFF colour table alone always has 256 entries, so without this sidecar QGIS shows a
  legend of 256 unnamed classes; QGIS loads ``map.qml`` beside ``map.tif`` automatically.
* :func:`vector_qml` — a *categorised* renderer on the ``class_id`` field, one solid fill per class.
* :func:`write_layer_style` — stores a QML in the GeoPackage's ``layer_styles`` table as QGIS
  itself writes it (``f_table_schema = ''``, the real geometry column, ``useAsDefault = 1``,
  ISO-8601 ``update_time``), registered in ``gpkg_contents`` as ``attributes``; QGIS then opens
  the layer styled ("Loaded from Provider").
"""

from __future__ import annotations

import datetime as _dt
import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geolesf.colors import hex_to_rgb as _rgb
from geolesf.io.atomic import atomic_path
from geolesf.colors import to_hex as _hex

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


LAYER_STYLES_DDL = """
CREATE TABLE IF NOT EXISTS layer_styles (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    f_table_catalog TEXT(256),
    f_table_schema TEXT(256),
    f_table_name TEXT(256),
    f_geometry_column TEXT(256),
    styleName TEXT(30),
    styleQML TEXT,
    styleSLD TEXT,
    useAsDefault BOOLEAN,
    description TEXT,
    owner TEXT(30),
    ui TEXT(30),
    update_time DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
)
"""


def write_layer_style(gpkg: str | Path, layer: str, qml: str, style_name: str | None = None,
                      description: str = "geolesf class map") -> None:
    """Store ``qml`` as the default style of ``layer`` in the GeoPackage's ``layer_styles`` table."""
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    con = sqlite3.connect(str(gpkg))
    try:
        row = con.execute(
            "SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?", (layer,)
        ).fetchone()
        geom_col = row[0] if row else "geom"
        con.execute(LAYER_STYLES_DDL)
        con.execute(
            "INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier, description, last_change) "
            "VALUES ('layer_styles', 'attributes', 'layer_styles', 'QGIS layer styles', ?)", (now,)
        )
        con.execute("UPDATE layer_styles SET useAsDefault = 0 WHERE f_table_name = ?", (layer,))
        con.execute(
            "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, "
            "styleName, styleQML, styleSLD, useAsDefault, description, owner, ui, update_time) "
            "VALUES ('', '', ?, ?, ?, ?, '', 1, ?, '', NULL, ?)",
            (layer, geom_col, style_name or layer, qml, description, now),
        )
        con.commit()
    finally:
        con.close()
