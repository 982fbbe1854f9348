"""The dataset catalog: one YAML file per dataset in ``geolesf/data_catalog/``.

Each entry says what a dataset is (modality, sensor, bands, classes), which files make it
up (name, public URLs, size, sha256), under which licence, how to cite it and which geolesf
function reads it. This module loads the entries (their types and validation are in
:mod:`geolesf.data.catalog_entries`), finds the files on disk and verifies them;
:mod:`geolesf.data.fetch` downloads them.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geolesf.data.catalog_entries import ClassInfo, DatasetEntry, FileEntry, parse_entry
from geolesf.errors import DataError
from geolesf.paths import data_home, embedded_data_root, extra_data_root

CATALOG_DIR = Path(__file__).resolve().parents[1] / "data_catalog"

STATUSES = ("OK", "MISMATCH", "MISSING", "UNKNOWN-CHECKSUM")


@dataclass(frozen=True)
class FileStatus:
    file: FileEntry
    status: str
    path: Path | None = None
    found_sha256: str | None = None
    detail: str = ""


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
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file (byte {exc.start}: {exc.reason})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise DataError(f"{path}: not valid YAML{where} ({' '.join(str(problem).split())})") from None
    except (ValueError, RecursionError) as exc:  # PyYAML raises ValueError for bad dates/!!int
        raise DataError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
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


def lookup(entries: dict[str, Any], name: str, what: str, listing: str, error: type[Exception] = DataError) -> Any:
    """``entries[name]``, or ``error`` naming the closest entry and the command that lists them all."""
    if name not in entries:
        close = difflib.get_close_matches(name, list(entries), n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise error(f"unknown {what} '{name}'{hint} (see `{listing}`)")
    return entries[name]


def get_dataset(name: str) -> DatasetEntry:
    return lookup(load_catalog(), name, "dataset", "geolesf data list")


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
