"""QGIS styles inside GeoPackages: the ``layer_styles`` table (the ``.qml`` documents themselves are
built by :mod:`geolesf.io.qml`).

* :func:`write_layer_style` — stores a QML in the GeoPackage's ``layer_styles`` table as QGIS
  itself writes it (``f_table_schema = ''``, the real geometry column, ``useAsDefault = 1``,
  ISO-8601 ``update_time``), registered in ``gpkg_contents`` as ``attributes``; QGIS then opens
  the layer styled ("Loaded from Provider").
"""

from __future__ import annotations

import datetime as _dt
import sqlite3
from pathlib import Path

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
