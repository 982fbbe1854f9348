"""The dataset catalog: one YAML file per dataset in ``geolesf/data_catalog/``.

Each entry says what a dataset is (modality, sensor, bands, classes), which files make it
up (name, public URLs, size, sha256), under which licence, how to cite it and which geolesf
function reads it. This module loads and validates the entries, finds the files on disk and
verifies them; :mod:`geolesf.data.fetch` downloads them.

Files are searched, in this order, in

1. ``$GEOLESF_DATA/<hint>/`` for each folder named in the entry's ``local.data_dirs``;
2. ``$GEOLESF_HOME/data/<name>/`` (where ``geolesf data fetch`` puts downloads);
3. the package's embedded folder ``geolesf/embedded/<local.embedded>/``.

Extra catalog folders can be named in ``GEOLESF_CATALOG`` (``os.pathsep``-separated); an
entry there replaces a built-in entry of the same name (for example to point at a mirror).
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from geolesf.errors import DataError
from geolesf.paths import data_home, embedded_data_root, extra_data_root

CATALOG_DIR = Path(__file__).resolve().parents[1] / "data_catalog"

MODALITIES = (
    "hyperspectral",
    "multispectral",
    "panchromatic",
    "aerial-rgb",
    "natural-rgb",
    "benchmark",
)
STATUSES = ("OK", "MISMATCH", "MISSING", "UNKNOWN-CHECKSUM")
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


@dataclass(frozen=True)
class FileStatus:
    file: FileEntry
    status: str
    path: Path | None = None
    found_sha256: str | None = None
    detail: str = ""


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
        raise c.fail(f"{where}.{sorted(unknown)[0]}", f"unknown key (allowed: {', '.join(sorted(_FILE_KEYS))})")
    name = c.get(raw, "name", where, str)
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or "\\" in name:
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
        raise c.fail(sorted(unknown)[0], f"unknown key (allowed: {', '.join(sorted(_TOP_KEYS))})")
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


# --------------------------------------------------------------------------- loading


def catalog_dirs() -> list[Path]:
    """The built-in catalog folder followed by those named in ``GEOLESF_CATALOG``."""
    extra = [Path(p).expanduser() for p in os.environ.get("GEOLESF_CATALOG", "").split(os.pathsep) if p]
    return [CATALOG_DIR, *extra]


_CACHE: dict[tuple[tuple[str, int], ...], dict[str, DatasetEntry]] = {}


def load_file(path: Path) -> DatasetEntry:
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    return parse_entry(raw, path)


def load_catalog() -> dict[str, DatasetEntry]:
    """All entries by name (later catalog folders override earlier ones)."""
    paths: list[Path] = []
    for folder in catalog_dirs():
        if folder.is_dir():
            paths.extend(sorted(folder.glob("*.yaml")))
        elif folder != CATALOG_DIR:
            raise DataError(f"GEOLESF_CATALOG names {folder}, which is not a folder")
    key = tuple((str(p), p.stat().st_mtime_ns) for p in paths)
    if key not in _CACHE:
        entries: dict[str, DatasetEntry] = {}
        for path in paths:
            entry = load_file(path)
            entries[entry.name] = entry
        _CACHE.clear()
        _CACHE[key] = entries
    return _CACHE[key]


def list_datasets() -> list[str]:
    return sorted(load_catalog())


def get_dataset(name: str) -> DatasetEntry:
    entries = load_catalog()
    if name not in entries:
        close = difflib.get_close_matches(name, list(entries), n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise DataError(f"unknown dataset '{name}'{hint} (see `geolesf data list`)")
    return entries[name]


def _entry(name_or_entry: str | DatasetEntry) -> DatasetEntry:
    return name_or_entry if isinstance(name_or_entry, DatasetEntry) else get_dataset(name_or_entry)


# --------------------------------------------------------------------------- local files


def search_dirs(name_or_entry: str | DatasetEntry) -> list[Path]:
    """Folders searched for the dataset's files, in order."""
    entry = _entry(name_or_entry)
    dirs: list[Path] = []
    root = extra_data_root()
    if root is not None:
        dirs.extend(root / hint for hint in entry.data_dirs)
    dirs.append(data_home() / entry.name)
    if entry.embedded:
        dirs.append(embedded_data_root() / entry.embedded)
    return dirs


def locate(name_or_entry: str | DatasetEntry, file: str | FileEntry) -> Path | None:
    """The first existing copy of ``file``, or None."""
    entry = _entry(name_or_entry)
    f = file if isinstance(file, FileEntry) else entry.file(file)
    for folder in search_dirs(entry):
        candidate = folder / f.name
        if candidate.is_file():
            return candidate
    return None


def dataset_path(name: str, file: str | None = None) -> Path:
    """Path of a catalogued file found locally (``file`` defaults to the entry's first file).

    Raises :class:`DataError` saying where it looked and how to obtain the file.
    """
    entry = get_dataset(name)
    f = entry.files[0] if file is None else entry.file(file)
    path = locate(entry, f)
    if path is not None:
        return path
    looked = ", ".join(str(d) for d in search_dirs(entry))
    if not entry.download_allowed:
        how = entry.download_note
    elif f.urls:
        how = f"run `geolesf data fetch {entry.name} --file {f.name}`"
    else:
        how = f"no download URL is known; {f.note or entry.download_note or 'obtain it from ' + entry.homepage}"
    raise DataError(f"{entry.name}: file '{f.name}' not found (looked in {looked}); {how}")


def _hexdigest(path: Path, algorithm: str) -> str:
    if algorithm == "sha256":
        from geolesf.registry import sha256_file

        return sha256_file(path)
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def check_file(path: Path, f: FileEntry) -> FileStatus:
    """Compare one local file with its catalogue record."""
    actual_size = path.stat().st_size
    found = _hexdigest(path, "sha256")
    if f.size is not None and actual_size != f.size:
        return FileStatus(f, "MISMATCH", path, found, f"size {actual_size:,} bytes, expected {f.size:,}")
    if f.sha256 is not None:
        if found == f.sha256:
            return FileStatus(f, "OK", path, found)
        return FileStatus(f, "MISMATCH", path, found, f"sha256 {found[:16]}…, expected {f.sha256[:16]}…")
    if f.checksums:
        for algo, expected in f.checksums.items():
            value = _hexdigest(path, algo)
            if value != expected:
                return FileStatus(f, "MISMATCH", path, found, f"{algo} {value}, expected {expected}")
        return FileStatus(f, "OK", path, found, f"{'/'.join(f.checksums)} matches (no sha256 recorded)")
    return FileStatus(f, "UNKNOWN-CHECKSUM", path, found, "no checksum recorded; sha256 of this copy shown")


def verify(name_or_entry: str | DatasetEntry, files: list[str] | None = None) -> list[FileStatus]:
    """Per-file status: OK, MISMATCH, MISSING or UNKNOWN-CHECKSUM."""
    entry = _entry(name_or_entry)
    selected = entry.files if files is None else tuple(entry.file(n) for n in files)
    out: list[FileStatus] = []
    for f in selected:
        path = locate(entry, f)
        out.append(FileStatus(f, "MISSING") if path is None else check_file(path, f))
    return out


def verify_ok(statuses: list[FileStatus]) -> bool:
    """True when nothing is MISMATCH and no required file is MISSING."""
    return not any(s.status == "MISMATCH" or (s.status == "MISSING" and s.file.required) for s in statuses)


def classes_for_file(path: str | Path) -> tuple[ClassInfo, ...]:
    """Class names/colours of the catalogued dataset that lists a file with this sha256.

    Lets a run on a known ground truth (e.g. ``Indian_pines_gt.mat``) carry the real class
    names without the user typing them; an unknown file gives ``()``.
    """
    from geolesf.registry import sha256_file

    path = Path(path)
    if not path.is_file():
        return ()
    digest = sha256_file(path)
    for entry in load_catalog().values():
        if entry.classes and any(f.sha256 == digest and f.role == "ground_truth" for f in entry.files):
            return entry.classes
    return ()
