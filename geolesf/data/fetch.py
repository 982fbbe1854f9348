"""Download catalogued dataset files: streaming, resumable, checksum-verified, atomic.

A download goes to ``<dest>/<file>.part``. An interrupted download leaves the ``.part``
behind and the next attempt asks the server only for the missing bytes (HTTP ``Range``).
A stream that grows past the catalog's size is stopped at once (and the ``.part`` removed),
never written to the end. When the last byte is in, the size and checksum are checked; a bad ``.part`` is deleted and
nothing appears at the destination. A good one is renamed into place in one step.

``GEOLESF_OFFLINE=1`` (or ``geolesf --offline``) makes every download refuse before any
network access.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geolesf.data.catalog import check_file, get_dataset, locate
from geolesf.data.catalog_entries import DatasetEntry, FileEntry
from geolesf.errors import ChecksumError, FetchError
from geolesf.paths import data_home

CHUNK = 1 << 16


class DownloadChecksumError(FetchError, ChecksumError):
    """A downloaded file's size or checksum differs from the catalogue record."""


@dataclass(frozen=True)
class FetchResult:
    file: FileEntry
    path: Path
    sha256: str
    action: str
    """``downloaded``, ``present`` (already there and verified) or ``skipped`` (no URL)."""
    verified: bool


def offline() -> bool:
    return os.environ.get("GEOLESF_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def _require_online(what: str) -> None:
    if offline():
        raise FetchError(f"offline mode (GEOLESF_OFFLINE=1 or --offline): refusing to download {what}")


def _verify_download(part: Path, size: int | None, sha256: str | None, checksums: dict[str, str]) -> str:
    """Check size and checksums of a finished ``.part``; delete it and raise when wrong."""
    actual = part.stat().st_size
    digests = {"sha256": hashlib.sha256()}
    for algo in checksums:
        digests[algo] = hashlib.new(algo)
    with open(part, "rb") as fh:
        while block := fh.read(1 << 20):
            for d in digests.values():
                d.update(block)
    found = {algo: d.hexdigest() for algo, d in digests.items()}
    problem = None
    if size is not None and actual != size:
        problem = f"size {actual:,} bytes, expected {size:,}"
    elif sha256 is not None and found["sha256"] != sha256:
        problem = f"sha256 {found['sha256']}, expected {sha256}"
    else:
        for algo, expected in checksums.items():
            if found[algo] != expected:
                problem = f"{algo} {found[algo]}, expected {expected}"
                break
    if problem:
        part.unlink(missing_ok=True)
        raise DownloadChecksumError(f"{part.name[:-5]}: downloaded file is corrupt or not the published one ({problem}); removed it")
    return found["sha256"]


def _stream(url: str, part: Path, *, size: int | None, session: Any, timeout: float, progress: bool) -> None:
    """Append the bytes missing from ``part`` (or restart it when the server ignores Range)."""
    import requests

    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    if size is not None and have == size:
        return  # complete already; the caller verifies it
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        response = session.get(url, stream=True, headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        raise FetchError(f"{url}: cannot connect ({exc.__class__.__name__}: {exc})") from None
    with response:
        if response.status_code == 416 and have:
            return  # nothing left to send: the .part is complete (verified by the caller)
        if response.status_code == 206 and have:
            content_range = response.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {have}-"):
                raise FetchError(f"{url}: server answered range {content_range!r} to a request from byte {have}")
            mode = "ab"
        elif response.status_code == 200:
            mode, have = "wb", 0  # server ignored Range: start over
        else:
            reason = response.reason or ""
            raise FetchError(f"{url}: HTTP {response.status_code} {reason}".rstrip())
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else size
        if size is not None and total is not None and total > size:
            part.unlink(missing_ok=True)
            raise DownloadChecksumError(f"{part.name[:-5]}: server announces {total:,} bytes, the catalog records "
                                        f"{size:,}; not downloaded")
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=part.name[:-5], disable=not progress, file=sys.stderr, leave=False)
        try:
            with open(part, mode) as fh:
                for chunk in response.iter_content(CHUNK):
                    if size is not None and have + len(chunk) > size:
                        # never write past the catalog's size: a wrong or hostile stream stops here
                        fh.close()
                        part.unlink(missing_ok=True)
                        raise DownloadChecksumError(
                            f"{part.name[:-5]}: download exceeds the catalog's size of {size:,} bytes; stopped "
                            "and removed it")
                    fh.write(chunk)
                    have += len(chunk)
                    bar.update(len(chunk))
        except requests.RequestException as exc:
            raise FetchError(f"{url}: download interrupted ({exc.__class__.__name__}); run again to resume") from None
        finally:
            bar.close()


def download(
    urls: str | list[str] | tuple[str, ...],
    dest: str | Path,
    *,
    size: int | None = None,
    sha256: str | None = None,
    checksums: dict[str, str] | None = None,
    session: Any = None,
    timeout: float = 60.0,
    progress: bool = True,
) -> str:
    """Download to ``dest`` from the first working URL, resuming ``dest.part``; returns the sha256.

    Raises :class:`FetchError` (offline, no URL, HTTP or connection error) or
    :class:`DownloadChecksumError` (wrong size or checksum; the ``.part`` is removed).
    """
    dest = Path(dest)
    urls = [urls] if isinstance(urls, str) else list(urls)
    if not urls:
        raise FetchError(f"{dest.name}: no download URL is known")
    _require_online(dest.name)
    if session is None:
        import requests

        session = requests.Session()
        session.headers["User-Agent"] = "geolesf-fetch"
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    errors: list[str] = []
    for url in urls:
        try:
            _stream(url, part, size=size, session=session, timeout=timeout, progress=progress)
            found = _verify_download(part, size, sha256, checksums or {})
        except FetchError as exc:
            errors.append(str(exc))
            if isinstance(exc, DownloadChecksumError) and len(urls) == 1:
                raise
            continue
        # Not geolesf.io.atomic.atomic_path: the .part must outlive an interrupted run so the next
        # one resumes it; the rename of the verified .part is the atomic step.
        os.replace(part, dest)
        return found
    if len(errors) == 1:
        raise FetchError(errors[0])
    raise FetchError(f"{dest.name}: every URL failed: " + "; ".join(errors))


def fetch(
    name_or_entry: str | DatasetEntry,
    *,
    files: list[str] | None = None,
    dest: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
    session: Any = None,
    log: Callable[[str], None] | None = None,
) -> list[FetchResult]:
    """Fetch a catalogued dataset (all files with a URL, or the named ``files``).

    Files already present and matching their checksum are not downloaded again unless
    ``force``: in ``dest`` when it is given, otherwise anywhere on the search path (see
    :func:`geolesf.data.catalog.search_dirs`). Downloads go to ``dest`` (default
    ``$GEOLESF_HOME/data/<name>/``).
    """
    entry = name_or_entry if isinstance(name_or_entry, DatasetEntry) else get_dataset(name_or_entry)
    say = log or (lambda message: None)
    if not entry.download_allowed:
        where = f" ({entry.homepage})" if entry.homepage else ""
        raise FetchError(f"{entry.name} cannot be downloaded automatically: {entry.download_note}{where}")
    explicit = files is not None
    selected = [entry.file(n) for n in files] if explicit else list(entry.files)
    if not any(f.urls for f in selected):
        which = ", ".join(f.name for f in selected)
        notes = "; ".join(f.note for f in selected if f.note)
        raise FetchError(f"{entry.name}: no download URL is known for {which}" + (f" ({notes})" if notes else ""))
    target_dir = Path(dest).expanduser() if dest is not None else data_home() / entry.name
    results: list[FetchResult] = []
    for f in selected:
        target = target_dir / f.name
        if not f.urls:
            if explicit:
                raise FetchError(f"{entry.name}: no download URL is known for {f.name}" + (f" ({f.note})" if f.note else ""))
            say(f"{f.name}: skipped (no download URL{'; ' + f.note if f.note else ''})")
            continue
        if not force:
            # With an explicit ``dest`` only that folder counts; otherwise the whole search path.
            existing = target if target.is_file() else (None if dest is not None else locate(entry, f))
            if existing is not None:
                status = check_file(existing, f)
                if status.status in ("OK", "UNKNOWN-CHECKSUM"):
                    say(f"{f.name}: present at {existing} ({status.status})")
                    results.append(FetchResult(f, existing, status.found_sha256 or "", "present", status.status == "OK"))
                    continue
                say(f"{f.name}: local copy at {existing} is {status.status} ({status.detail}); downloading again")
        _require_online(f"{entry.name}/{f.name}")
        say(f"{f.name}: downloading to {target}")
        found = download(f.urls, target, size=f.size, sha256=f.sha256, checksums=f.checksums,
                         session=session, progress=progress)
        verified = f.sha256 is not None or bool(f.checksums)
        if not verified:
            say(f"{f.name}: no checksum recorded in the catalog; sha256 of the download is {found}")
        results.append(FetchResult(f, target, found, "downloaded", verified))
    return results
