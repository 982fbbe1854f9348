"""A STAC Item beside a class-map GeoTIFF: classes, projection and provenance, validated offline.

:func:`write_stac_item` reads a class map written by geolesf (tiled predictor, whole-cube
classifier or ``DataArray.geolesf.to_qgis``) and writes ``<name>.stac.json`` beside it:

* **assets**: the class map (``classmap``, COG media type when GDAL reports ``LAYOUT=COG``),
  and whichever siblings exist — ``style`` (``.qml``), ``polygons`` (``.gpkg``), ``preview``
  (``.png``), ``probabilities`` (when given); hrefs are relative to the Item.
* **classification extension** (v2.0.0): ``classification:classes`` on the class-map asset — value,
  description (the class name), name (a slug of it) and ``color_hint`` from the colour table.
* **projection extension** (v2.0.0): ``proj:code`` (``"EPSG:32618"``; ``proj:wkt2`` instead when the
  CRS has no EPSG code), ``proj:shape``, ``proj:transform`` and ``proj:bbox`` (in the map's CRS);
  geometry and ``bbox`` in WGS 84. A map without a CRS (pixel coordinates) gets a null geometry,
  ``proj:code: null`` and no ``proj:bbox``. The nodata value is not listed as a class (it is
  ``geolesf:nodata``).
* **provenance** (``geolesf:*`` properties): model, weights sha256, tile, overlap, blend, patch size,
  geolesf version, source scene (the input file's path) and the output nodata.
* **time**: ``datetime`` is the acquisition time when it is known — the map's ``acquired`` tag
  (ISO 8601, written by the predictors from the input), else the ``TIFFTAG_DATETIME`` of the map or
  of its source GeoTIFF — and ``geolesf:datetime_is`` says ``"acquisition"``. Otherwise (STAC
  requires ``datetime`` or a start/end range) it is the time the Item is written and
  ``geolesf:datetime_is`` is ``"processing"`` (``"given"`` for an explicit ``datetime=``);
  ``created`` is always the writing time.

Validation: :func:`validate_item` runs pystac's JSON-schema validator entirely offline — the STAC
core Item schema shipped with pystac plus the two extension schemas vendored in
``geolesf/export/stac_schemas/`` (see its README for their origin). Any other schema URI raises
instead of being fetched. Both extensions are at the versions pystac 1.15 writes, so plain
``pystac.Item.from_file(path).validate()`` keeps them; it works offline once
:func:`use_offline_schemas` has registered the vendored schemas with pystac.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from pathlib import Path
from typing import Any

from geolesf.colors import to_hex
from geolesf.errors import DataError

PROJECTION = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
CLASSIFICATION = "https://stac-extensions.github.io/classification/v2.0.0/schema.json"
SCHEMA_FILES = {PROJECTION: "projection-v2.0.0.json", CLASSIFICATION: "classification-v2.0.0.json"}
COG_MEDIA = "image/tiff; application=geotiff; profile=cloud-optimized"
GEOTIFF_MEDIA = "image/tiff; application=geotiff"
PROVENANCE_TAGS = ("model", "weights_sha256", "tile", "overlap", "blend", "blend_margin", "blend_on", "patch_size",
                   "geolesf_version", "source")
INT_TAGS = ("tile", "overlap", "blend_margin", "patch_size")


def stac_path(tif: str | Path) -> Path:
    """``map.tif`` → ``map.stac.json``."""
    tif = Path(tif)
    return tif.with_name(f"{tif.stem}.stac.json")


def _slug(name: str) -> str:
    s = re.sub(r"[^0-9A-Za-z_-]+", "_", name.strip()).strip("_")
    return s or "class"


def _hex6(c: Any) -> str:
    return to_hex(c, upper=True)[1:]


def _read_map(tif: Path) -> dict[str, Any]:
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    from geolesf.export.vector import read_class_info

    info = read_class_info(tif)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tif) as src:
            tags = src.tags()
            bounds, shape = src.bounds, (src.height, src.width)
            cog = src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT", "").upper() == "COG"
            dtype = src.dtypes[0]
    return {"info": info, "tags": tags, "bounds": bounds, "shape": shape, "cog": cog, "dtype": dtype}


def _geometry(crs: Any, bounds: Any) -> tuple[dict[str, Any] | None, list[float] | None]:
    if crs is None:
        return None, None
    from rasterio.warp import transform_geom

    ring = [[bounds.left, bounds.bottom], [bounds.right, bounds.bottom], [bounds.right, bounds.top],
            [bounds.left, bounds.top], [bounds.left, bounds.bottom]]
    geom = transform_geom(crs, "EPSG:4326", {"type": "Polygon", "coordinates": [ring]}, precision=9)
    xs = [p[0] for p in geom["coordinates"][0]]
    ys = [p[1] for p in geom["coordinates"][0]]
    return dict(geom), [min(xs), min(ys), max(xs), max(ys)]


def stac_item(
    tif: str | Path,
    *,
    item_id: str | None = None,
    datetime: _dt.datetime | None = None,
    probabilities: str | Path | None = None,
    href_base: str | Path | None = None,
) -> Any:
    """Build the :class:`pystac.Item` describing class map ``tif`` (see the module docstring).

    ``href_base``: the folder the Item will be written to (asset hrefs are made relative to it);
    defaults to the map's folder.
    """
    import pystac

    tif = Path(tif)
    m = _read_map(tif)
    info, tags = m["info"], m["tags"]
    base = Path(href_base) if href_base is not None else tif.parent
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    geometry, bbox = _geometry(info.crs, m["bounds"])
    epsg = info.crs.to_epsg() if info.crs is not None else None
    t = info.transform
    acquired = acquisition_time(tags)
    props: dict[str, Any] = {
        "created": now.isoformat().replace("+00:00", "Z"),
        "geolesf:datetime_is": "given" if datetime is not None else "acquisition" if acquired else "processing",
        "proj:code": f"EPSG:{epsg}" if epsg is not None else None,
        "proj:shape": [int(m["shape"][0]), int(m["shape"][1])],
        "proj:transform": [float(v) for v in (t.a, t.b, t.c, t.d, t.e, t.f)],
    }
    if info.crs is not None:
        props["proj:bbox"] = [float(v) for v in m["bounds"]]
        if epsg is None:
            props["proj:wkt2"] = info.crs.to_wkt()
    for key in PROVENANCE_TAGS:
        if key in tags:
            value: Any = tags[key]
            if key in INT_TAGS:
                try:
                    value = int(value)
                except ValueError:
                    pass
            props[f"geolesf:{'version' if key == 'geolesf_version' else key}"] = value
    props["geolesf:nodata"] = info.nodata
    item = pystac.Item(
        id=item_id or tif.stem, geometry=geometry, bbox=bbox, datetime=datetime or acquired or now,
        properties=props, stac_extensions=[PROJECTION, CLASSIFICATION],
    )
    classes = [{"value": int(i), "description": str(n), "name": _slug(str(n)), "color_hint": _hex6(c)}
               for i, n, c in zip(info.class_ids, info.class_names, info.colors) if i != info.nodata]

    def rel(p: Path) -> str:
        try:
            return str(p.resolve().relative_to(base.resolve()))
        except ValueError:
            return str(p.resolve())

    item.add_asset("classmap", pystac.Asset(
        href=rel(tif), media_type=COG_MEDIA if m["cog"] else GEOTIFF_MEDIA, roles=["data"],
        title=f"class map ({tags.get('model', 'geolesf')})",
        extra_fields={"classification:classes": classes, "geolesf:data_type": m["dtype"]},
    ))
    siblings = [("style", tif.with_suffix(".qml"), "application/xml", "metadata", "QGIS style"),
                ("polygons", tif.with_suffix(".gpkg"), "application/geopackage+sqlite3", "data", "polygons"),
                ("preview", tif.with_suffix(".png"), "image/png", "overview", "preview")]
    if probabilities is not None:
        siblings.append(("probabilities", Path(probabilities), COG_MEDIA, "data", "per-class probabilities"))
    for key, path, media, role, title in siblings:
        if path.is_file():
            item.add_asset(key, pystac.Asset(href=rel(path), media_type=media, roles=[role], title=title))
        elif key == "probabilities":
            raise DataError(f"--probabilities {path}: file not found for the STAC Item")
    return item


def acquisition_time(tags: dict[str, str]) -> _dt.datetime | None:
    """The acquisition time recorded in a class map's tags, or in its source GeoTIFF; None if unknown."""
    from geolesf.io.cog import acquired_iso

    stamp = acquired_iso(tags.get("acquired")) or acquired_iso(tags.get("TIFFTAG_DATETIME"))
    source = Path(tags.get("source", ""))
    if stamp is None and source.suffix.lower() in (".tif", ".tiff") and source.is_file():
        import rasterio

        try:
            with rasterio.open(source) as src:
                stamp = acquired_iso(src.tags().get("TIFFTAG_DATETIME"))
        except rasterio.errors.RasterioError:
            stamp = None
    return None if stamp is None else _dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def use_offline_schemas() -> Any:
    """Register the offline validator with pystac, so plain ``item.validate()`` never fetches a schema."""
    from pystac.validation import set_validator

    validator = _OfflineValidator()
    set_validator(validator)
    return validator


class _OfflineValidator:
    """pystac's JSON-schema validator with a schema cache that never goes to the network."""

    def __new__(cls) -> Any:
        from pystac.validation.stac_validator import GetSchemaError, JsonSchemaSTACValidator

        class Validator(JsonSchemaSTACValidator):
            def _get_schema(self, schema_uri: str) -> dict[str, Any]:
                key = schema_uri.rstrip("#")
                if key not in self.schema_cache:
                    raise GetSchemaError(schema_uri, DataError(
                        f"schema {schema_uri} is not available offline (bundled: pystac core + "
                        f"{', '.join(SCHEMA_FILES)})"))
                return self.schema_cache[key]

        v = Validator()
        folder = Path(__file__).with_name("stac_schemas")
        for uri, name in SCHEMA_FILES.items():
            v.schema_cache[uri] = json.loads((folder / name).read_text())
        return v


def validate_item(item: Any) -> list[str]:
    """Validate a :class:`pystac.Item` (or a path to one) offline; returns the schema URIs checked.

    Raises :class:`geolesf.errors.DataError` naming the first failing schema and field.
    """
    import pystac
    from pystac.errors import STACValidationError
    from pystac.validation import validate_dict

    if isinstance(item, pystac.Item):
        payload, name = item.to_dict(include_self_link=False, transform_hrefs=False), item.id
    else:
        # the file as written (pystac.Item.from_file would migrate anything older than its defaults)
        path = Path(item)
        if not path.is_file():
            raise DataError(f"STAC Item {path}: file not found")
        payload, name = json.loads(path.read_text()), str(path)
    try:
        return list(validate_dict(payload, validator=_OfflineValidator()))
    except STACValidationError as exc:
        src = exc.source
        detail = getattr(src, "message", None) or str(exc).splitlines()[0]
        raise DataError(f"STAC Item {name}: invalid ({detail})") from None


def write_stac_item(
    tif: str | Path,
    out: str | Path | None = None,
    *,
    probabilities: str | Path | None = None,
    datetime: _dt.datetime | None = None,
    validate: bool = True,
) -> Path:
    """Write the STAC Item of class map ``tif`` to ``out`` (default ``<name>.stac.json``), atomically.

    With ``validate`` the Item is checked offline (:func:`validate_item`) before anything is written.
    """
    from geolesf.io.atomic import atomic_path

    out = Path(out) if out is not None else stac_path(tif)
    if out.suffix.lower() != ".json":
        raise DataError(f"STAC Item {out}: expected a .json path")
    item = stac_item(tif, probabilities=probabilities, datetime=datetime, href_base=out.parent)
    if validate:
        validate_item(item)
    payload = item.to_dict(include_self_link=False, transform_hrefs=False)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
    return out
