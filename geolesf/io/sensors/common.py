"""What the product readers share: safe XML parsing, finding a product's member files, ISO times."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

from geolesf.errors import DataError

MAX_XML_BYTES = 64 << 20


def parse_xml(path: Path, what: str) -> ET.Element:
    """The root element of a product's XML metadata; DTDs/entities are refused (no entity expansion)."""
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    size = path.stat().st_size
    if size > MAX_XML_BYTES:
        raise DataError(f"{path}: {what} is {size:,} bytes, more than the {MAX_XML_BYTES:,} a metadata file may have")
    raw = path.read_bytes()
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        raise DataError(f"{path}: {what} declares a DTD or entities; refused")
    try:
        return ET.fromstring(raw)
    except ET.ParseError as exc:
        raise DataError(f"{path}: {what} is not well-formed XML ({exc})") from None


def member(folder: Path, prefix: str, suffix: str, what: str, required: bool = True) -> Path | None:
    """``<prefix><suffix>`` in ``folder``, matching the suffix case-insensitively (.TIF / .tif)."""
    wanted = (prefix + suffix).lower()
    for cand in sorted(folder.iterdir()) if folder.is_dir() else []:
        if cand.name.lower() == wanted:
            return cand
    if required:
        raise DataError(f"{folder / (prefix + suffix)}: {what} not found beside the metadata file")
    return None


def metadata_file(path: Path, suffix: str, name_test: "re.Pattern[str]") -> Path | None:
    """The metadata file a path names: itself, the one file in the folder whose name ends ``suffix``, or
    (given the product's ``*-SPECTRAL_IMAGE`` raster) the metadata file beside it."""
    if path.is_file():
        if not name_test.search(path.name):
            return None
        if path.name.lower().endswith(suffix.lower()):
            return path
        stem, sep, _ = path.name.rpartition("-SPECTRAL_IMAGE.")
        return member(path.parent, stem, suffix, "metadata", required=False) if sep else None
    if path.is_dir():
        found = [p for p in path.iterdir() if p.name.lower().endswith(suffix.lower()) and name_test.search(p.name)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise DataError(f"{path}: {len(found)} product metadata files ({', '.join(p.name for p in found)}); "
                            "name one of them")
    return None


def text(root: ET.Element, xpath: str, path: Path, what: str) -> str:
    node = root.find(xpath)
    if node is None or node.text is None or not node.text.strip():
        raise DataError(f"{path}: {what} lacks <{xpath}>")
    return node.text.strip()


def number(value: str | None, path: Path, what: str) -> float:
    try:
        return float(str(value).strip())
    except ValueError:
        raise DataError(f"{path}: {what} is {value!r}, not a number") from None


def iso_time(value: str | None) -> str | None:
    """An ISO 8601 UTC string of a product time (``2022-07-24T10:45:26.123Z`` and similar), or None."""
    if not value:
        return None
    value = value.strip().replace("Z", "+00:00")
    value = re.sub(r"(\.\d{6})\d+", r"\1", value)  # Python takes at most microseconds
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
