"""Catalog entry types and their validation: one YAML document → a :class:`DatasetEntry`.

:func:`parse_entry` checks every key and type, naming the YAML file and the offending key on
error; :mod:`geolesf.data.catalog` finds the YAML files, loads, locates and verifies them.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from geolesf.errors import DataError

MODALITIES = (
    "hyperspectral",
    "multispectral",
    "panchromatic",
    "aerial-rgb",
    "natural-rgb",
    "benchmark",
)
_ALT_ALGORITHMS = {"md5": 32, "sha1": 40}
_HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_DOTTED = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$")


@dataclass(frozen=True)
class ClassInfo:
    id: int
    name: str
    colour: str


@dataclass(frozen=True)
class Bands:
    count: int | None = None
    wavelengths_nm: tuple[float, ...] = ()
    range_nm: tuple[float, float] | None = None
    names: tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class FileEntry:
    name: str
    """Path relative to the dataset folder (POSIX separators)."""
    urls: tuple[str, ...] = ()
    size: int | None = None
    sha256: str | None = None
    checksums: dict[str, str] = field(default_factory=dict)
    """Other published checksums (``md5``, ``sha1``) used when no sha256 is known."""
    role: str = ""
    key: str | None = None
    loader: str | None = None
    required: bool = True
    note: str = ""


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    title: str
    description: str
    modality: str
    sensor: str
    licence: str
    citation: str
    files: tuple[FileEntry, ...]
    bands: Bands | None = None
    classes: tuple[ClassInfo, ...] = ()
    class_remap: dict[int, int] = field(default_factory=dict)
    """Maps the ids stored in the files to the standard ids of the scene, when they differ."""
    homepage: str = ""
    loader: str = ""
    data_dirs: tuple[str, ...] = ()
    embedded: str | None = None
    download_allowed: bool = True
    download_note: str = ""
    notes: str = ""
    source: Path | None = None

    def file(self, name: str) -> FileEntry:
        """The file entry called ``name`` (full relative path or unique base name)."""
        for f in self.files:
            if f.name == name:
                return f
        matches = [f for f in self.files if PurePosixPath(f.name).name == name]
        if len(matches) == 1:
            return matches[0]
        names = [f.name for f in self.files]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise DataError(f"dataset '{self.name}' has no file '{name}'{hint} (files: {', '.join(names)})")


# --------------------------------------------------------------------------- validation


class _Checker:
    """Reads typed values out of a YAML mapping, naming the file and key on error."""

    def __init__(self, source: Path) -> None:
        self.source = source

    def fail(self, key: str, message: str) -> DataError:
        return DataError(f"{self.source}: key '{key}': {message}")

    def get(self, mapping: dict, key: str, where: str, types: type | tuple, *, required: bool = True,
            default: Any = None) -> Any:
        full = f"{where}.{key}" if where else key
        if key not in mapping or mapping[key] is None:
            if required:
                raise self.fail(full, "missing (required)")
            return default
        value = mapping[key]
        if types is int and isinstance(value, bool) or not isinstance(value, types):
            expected = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
            raise self.fail(full, f"expected {expected}, found {type(value).__name__} {value!r}")
        return value

    def strings(self, mapping: dict, key: str, where: str) -> tuple[str, ...]:
        value = self.get(mapping, key, where, (list, str), required=False, default=[])
        value = [value] if isinstance(value, str) else value
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise self.fail(f"{where}.{key}[{i}]" if where else f"{key}[{i}]", f"expected a non-empty string, found {item!r}")
        return tuple(value)


_TOP_KEYS = {
    "name", "title", "description", "modality", "sensor", "bands", "classes", "class_remap", "files",
    "licence", "citation", "homepage", "loader", "local", "download", "notes",
}
_FILE_KEYS = {"name", "urls", "url", "size", "sha256", "checksums", "role", "key", "loader", "required", "note"}


def _parse_file(c: _Checker, raw: Any, where: str) -> FileEntry:
    if not isinstance(raw, dict):
        raise c.fail(where, f"expected a mapping, found {type(raw).__name__}")
    unknown = set(raw) - _FILE_KEYS
    if unknown:
        raise c.fail(f"{where}.{sorted(unknown, key=str)[0]}", f"unknown key (allowed: {', '.join(sorted(_FILE_KEYS))})")
    name = c.get(raw, "name", where, str)
    pure = PurePosixPath(name)
    if (pure.is_absolute() or ".." in pure.parts or "\\" in name or not pure.parts or name.endswith("/")
            or "." in name.split("/")):
        raise c.fail(f"{where}.name", f"must be a relative POSIX path inside the dataset folder, found {name!r}")
    urls = c.strings(raw, "urls", where) + c.strings(raw, "url", where)
    for i, url in enumerate(urls):
        if not url.startswith(("https://", "http://")):
            raise c.fail(f"{where}.urls[{i}]", f"expected an http(s) URL, found {url!r}")
    if "sha256" not in raw:
        raise c.fail(f"{where}.sha256", "missing: give the sha256, or `sha256: null` with a `note` when unknown")
    sha = c.get(raw, "sha256", where, str, required=False)
    if sha is not None and not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise c.fail(f"{where}.sha256", f"expected 64 lowercase hex characters, found {sha!r}")
    note = c.get(raw, "note", where, str, required=False, default="").strip()
    if sha is None and not note:
        raise c.fail(f"{where}.note", "required when sha256 is null (say why the checksum is unknown)")
    size = c.get(raw, "size", where, int, required=False)
    if size is not None and size < 0:
        raise c.fail(f"{where}.size", f"expected a byte count >= 0, found {size}")
    checksums = c.get(raw, "checksums", where, dict, required=False, default={})
    for algo, value in checksums.items():
        if algo not in _ALT_ALGORITHMS:
            raise c.fail(f"{where}.checksums.{algo}", f"unsupported algorithm (allowed: {', '.join(_ALT_ALGORITHMS)})")
        if not isinstance(value, str) or not re.fullmatch(rf"[0-9a-f]{{{_ALT_ALGORITHMS[algo]}}}", value):
            raise c.fail(f"{where}.checksums.{algo}", f"expected {_ALT_ALGORITHMS[algo]} lowercase hex characters, found {value!r}")
    loader = c.get(raw, "loader", where, str, required=False)
    if loader is not None and not _DOTTED.match(loader):
        raise c.fail(f"{where}.loader", f"expected a dotted function path, found {loader!r}")
    return FileEntry(
        name=name,
        urls=urls,
        size=size,
        sha256=sha,
        checksums=dict(checksums),
        role=c.get(raw, "role", where, str, required=False, default=""),
        key=c.get(raw, "key", where, str, required=False),
        loader=loader,
        required=c.get(raw, "required", where, bool, required=False, default=True),
        note=note,
    )


def _parse_bands(c: _Checker, raw: Any) -> Bands | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise c.fail("bands", f"expected a mapping, found {type(raw).__name__}")
    count = c.get(raw, "count", "bands", int, required=False)
    wavelengths = c.get(raw, "wavelengths_nm", "bands", list, required=False, default=[])
    for i, w in enumerate(wavelengths):
        if isinstance(w, bool) or not isinstance(w, (int, float)):
            raise c.fail(f"bands.wavelengths_nm[{i}]", f"expected a number, found {w!r}")
    if count is not None and wavelengths and len(wavelengths) != count:
        raise c.fail("bands.wavelengths_nm", f"has {len(wavelengths)} values but bands.count is {count}")
    rng = c.get(raw, "range_nm", "bands", list, required=False)
    if rng is not None and (len(rng) != 2 or not all(isinstance(v, (int, float)) for v in rng) or rng[0] >= rng[1]):
        raise c.fail("bands.range_nm", f"expected [low, high] in nm, found {rng!r}")
    return Bands(
        count=count,
        wavelengths_nm=tuple(float(w) for w in wavelengths),
        range_nm=(float(rng[0]), float(rng[1])) if rng else None,
        names=c.strings(raw, "names", "bands"),
        note=c.get(raw, "note", "bands", str, required=False, default="").strip(),
    )


def _parse_classes(c: _Checker, raw: Any) -> tuple[ClassInfo, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise c.fail("classes", f"expected a list, found {type(raw).__name__}")
    out: list[ClassInfo] = []
    for i, item in enumerate(raw):
        where = f"classes[{i}]"
        if not isinstance(item, dict):
            raise c.fail(where, f"expected a mapping with id, name, colour, found {item!r}")
        colour = c.get(item, "colour", where, str)
        if not _HEX_COLOUR.match(colour):
            raise c.fail(f"{where}.colour", f"expected a hex colour like '#1f77b4', found {colour!r}")
        out.append(ClassInfo(id=c.get(item, "id", where, int), name=c.get(item, "name", where, str), colour=colour.lower()))
    ids = [k.id for k in out]
    if len(set(ids)) != len(ids):
        raise c.fail("classes", f"duplicate class ids: {sorted({i for i in ids if ids.count(i) > 1})}")
    return tuple(out)


def parse_entry(raw: Any, source: Path) -> DatasetEntry:
    """Validate one YAML document; errors name ``source`` and the offending key."""
    c = _Checker(source)
    if not isinstance(raw, dict):
        raise DataError(f"{source}: expected a mapping at the top level, found {type(raw).__name__}")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise c.fail(sorted(unknown, key=str)[0], f"unknown key (allowed: {', '.join(sorted(_TOP_KEYS))})")
    name = c.get(raw, "name", "", str)
    if not _NAME.match(name):
        raise c.fail("name", f"expected lowercase letters, digits and '_', found {name!r}")
    if source.suffix in (".yaml", ".yml") and source.stem != name:
        raise c.fail("name", f"'{name}' differs from the file name '{source.stem}'")
    modality = c.get(raw, "modality", "", str)
    if modality not in MODALITIES:
        raise c.fail("modality", f"expected one of {', '.join(MODALITIES)}, found {modality!r}")
    raw_files = c.get(raw, "files", "", list)
    if not raw_files:
        raise c.fail("files", "needs at least one file")
    files = tuple(_parse_file(c, f, f"files[{i}]") for i, f in enumerate(raw_files))
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise c.fail("files", f"duplicate file names: {sorted({n for n in names if names.count(n) > 1})}")
    remap_raw = c.get(raw, "class_remap", "", dict, required=False, default={})
    remap: dict[int, int] = {}
    for k, v in remap_raw.items():
        if isinstance(k, bool) or isinstance(v, bool) or not isinstance(k, int) or not isinstance(v, int):
            raise c.fail(f"class_remap.{k}", f"expected integer -> integer, found {k!r}: {v!r}")
        remap[k] = v
    if remap and len(set(remap.values())) != len(remap):
        raise c.fail("class_remap", "is not one-to-one")
    local = c.get(raw, "local", "", dict, required=False, default={})
    download = c.get(raw, "download", "", dict, required=False, default={})
    allowed = c.get(download, "allowed", "download", bool, required=False, default=True)
    dl_note = c.get(download, "note", "download", str, required=False, default="")
    if not allowed and not dl_note:
        raise c.fail("download.note", "required when download.allowed is false (say how to obtain the data)")
    loader = c.get(raw, "loader", "", str, required=False, default="")
    if loader and not _DOTTED.match(loader):
        raise c.fail("loader", f"expected a dotted function path, found {loader!r}")
    return DatasetEntry(
        name=name,
        title=c.get(raw, "title", "", str, required=False, default=name),
        description=c.get(raw, "description", "", str).strip(),
        modality=modality,
        sensor=c.get(raw, "sensor", "", str),
        licence=c.get(raw, "licence", "", str).strip(),
        citation=c.get(raw, "citation", "", str).strip(),
        files=files,
        bands=_parse_bands(c, raw.get("bands")),
        classes=_parse_classes(c, raw.get("classes")),
        class_remap=remap,
        homepage=c.get(raw, "homepage", "", str, required=False, default=""),
        loader=loader,
        data_dirs=c.strings(local, "data_dirs", "local"),
        embedded=c.get(local, "embedded", "local", str, required=False),
        download_allowed=allowed,
        download_note=dl_note.strip(),
        notes=c.get(raw, "notes", "", str, required=False, default="").strip(),
        source=source,
    )
