"""The weights catalog: foundation-model checkpoints the PEFT methods start from (SAM, CLIP).

Entries live in ``geolesf/weights_catalog/*.yaml`` (a ``weights:`` list per file): name, file, URLs,
size, sha256 (only where the authors publish one), licence, citation and which config key takes it.
Files are kept in ``$GEOLESF_HOME/weights/``. Downloads reuse :func:`geolesf.data.fetch.download`
(resumable ``.part`` with HTTP ``Range``, size and sha256 checked before the atomic rename, offline mode
refused before any network access).

Where no sha256 is published (SAM), the first fetch computes it and *pins* it in
``$GEOLESF_HOME/weights/<file>.sha256``; every later use must match the pin (a file put there by hand is
pinned on its first use). This is trust-on-first-use, not a published checksum, and ``geolesf weights
info`` says so.

Configs name catalogued weights as ``weights:NAME`` (e.g. ``model.checkpoint: weights:sam_vit_b``);
:func:`resolve_spec` turns that into the local file and the sha256 it must have, and the loader
verifies the file once while reading it. An unfetched name is a one-line error that says which
``geolesf weights fetch`` to run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geolesf.errors import DataError, ModelError
from geolesf.paths import weights_home

CATALOG_DIR = Path(__file__).resolve().parents[1] / "weights_catalog"
PREFIX = "weights:"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEYS = {"name": str, "title": str, "file": str, "urls": list, "size": (int, type(None)),
         "sha256": (str, type(None)), "sha256_note": str, "licence": str, "homepage": str, "used_by": str,
         "citation": str}
_REQUIRED = ("name", "title", "file", "urls", "licence", "citation")


@dataclass(frozen=True)
class WeightsEntry:
    name: str
    title: str
    file: str
    urls: tuple[str, ...]
    licence: str
    citation: str
    size: int | None = None
    sha256: str | None = None
    """Published by the authors, or None."""
    sha256_note: str = ""
    homepage: str = ""
    used_by: str = ""
    source: Path | None = None

    @property
    def path(self) -> Path:
        """Where the file is kept (it may not exist)."""
        return weights_home() / self.file

    @property
    def pin_path(self) -> Path:
        return weights_home() / f"{self.file}.sha256"

    def pinned(self) -> str | None:
        """The locally pinned sha256 (unpublished checksums only), or None."""
        if self.sha256 is not None or not self.pin_path.is_file():
            return None
        value = self.pin_path.read_text(encoding="utf-8").split()[0:1]
        if not value or not _HEX64.fullmatch(value[0]):
            raise DataError(f"{self.pin_path}: not a sha256 pin (64 hex digits); delete it and fetch {self.name} again")
        return value[0]

    def expected_sha256(self) -> str | None:
        return self.sha256 or self.pinned()


def _parse(raw: Any, source: Path) -> WeightsEntry:
    if not isinstance(raw, dict):
        raise DataError(f"{source}: each item of 'weights' must be a mapping, found {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise DataError(f"{source}: unknown key '{unknown[0]}' (keys: {', '.join(_KEYS)})")
    missing = [k for k in _REQUIRED if raw.get(k) in (None, "", [])]
    if missing:
        raise DataError(f"{source}: entry {raw.get('name', '?')!r} lacks '{missing[0]}'")
    for key, value in raw.items():
        if not isinstance(value, _KEYS[key]) or isinstance(value, bool):
            raise DataError(f"{source}: entry {raw['name']!r}: '{key}' has the wrong type ({type(value).__name__})")
    if raw.get("sha256") is not None and not _HEX64.fullmatch(raw["sha256"]):
        raise DataError(f"{source}: entry {raw['name']!r}: sha256 must be 64 lower-case hex digits")
    if not all(isinstance(u, str) and u.startswith(("https://", "http://")) for u in raw["urls"]):
        raise DataError(f"{source}: entry {raw['name']!r}: urls must be http(s):// strings")
    fields = {k: (tuple(v) if k == "urls" else " ".join(v.split()) if k == "citation" else v) for k, v in raw.items()}
    return WeightsEntry(**fields, source=source)


def load_weights_catalog(folder: Path | None = None) -> dict[str, WeightsEntry]:
    """Every catalogued entry by name (``folder`` defaults to the package's ``weights_catalog``)."""
    import yaml

    entries: dict[str, WeightsEntry] = {}
    for source in sorted((folder or CATALOG_DIR).glob("*.yaml")):
        try:
            raw = yaml.safe_load(source.read_text(encoding="utf-8"))
        except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{source}: cannot read the weights catalog ({exc.__class__.__name__})") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("weights"), list):
            raise DataError(f"{source}: expected a mapping with a 'weights' list")
        for item in raw["weights"]:
            entry = _parse(item, source)
            if entry.name in entries:
                raise DataError(f"{source}: weights '{entry.name}' is also defined in {entries[entry.name].source}")
            entries[entry.name] = entry
    return entries


def list_weights() -> list[str]:
    return sorted(load_weights_catalog())


def get_weights(name: str) -> WeightsEntry:
    from geolesf.data.catalog import lookup

    return lookup(load_weights_catalog(), name, "weights", "geolesf weights list", ModelError)


def _pin(entry: WeightsEntry, digest: str) -> None:
    from geolesf.io.atomic import atomic_path

    with atomic_path(entry.pin_path) as tmp:
        tmp.write_text(f"{digest}  {entry.file}\n", encoding="utf-8")


def verify_local(entry: WeightsEntry, pin: bool = True) -> tuple[Path, str]:
    """``(path, sha256)`` of the local file, checked against the published sha256, else the pin (the
    first use pins an unpinned file when ``pin``); a :class:`ModelError` when it is absent."""
    from geolesf.registry import verify_sha256

    path = entry.path
    if not path.is_file():
        raise ModelError(f"weights '{entry.name}' are not fetched (no {path}); run `geolesf weights fetch {entry.name}`")
    if entry.size is not None and path.stat().st_size != entry.size:
        raise ModelError(f"{path}: {path.stat().st_size:,} bytes, the catalog records {entry.size:,} for "
                         f"'{entry.name}'; delete it and run `geolesf weights fetch {entry.name}`")
    expected = entry.expected_sha256()
    digest = verify_sha256(path, expected)
    if expected is None and pin:
        _pin(entry, digest)
    return path, digest


def resolve_spec(spec: Any, sha256: str | None = None, key: str = "checkpoint") -> tuple[Any, str | None]:
    """``weights:NAME`` → ``(local file, the sha256 it must have)``; any other value is returned as is.

    The file is not hashed here (the loader verifies it with the returned sha256 while reading it) unless
    its checksum is neither published nor pinned yet: then it is hashed and pinned now. A ``sha256`` the
    config gives must agree with the catalog's.
    """
    if not isinstance(spec, str) or not spec.startswith(PREFIX):
        return spec, sha256
    entry = get_weights(spec[len(PREFIX):])
    expected = entry.expected_sha256()
    if expected is None:
        path, expected = verify_local(entry)
    else:
        path = entry.path
        if not path.is_file():
            raise ModelError(f"{key} {spec}: not fetched (no {path}); run `geolesf weights fetch {entry.name}`")
    if sha256 and sha256.lower() != expected:
        raise ModelError(f"{key} {spec}: the config's sha256 {sha256[:16]}… differs from the catalog's "
                         f"{expected[:16]}…")
    return path, expected


@dataclass(frozen=True)
class WeightsFetch:
    entry: WeightsEntry
    path: Path
    sha256: str
    action: str
    """``downloaded`` or ``present`` (already there and verified)."""
    pinned: bool
    """True when the sha256 was pinned by this fetch (none is published)."""


def fetch_weights(name: str, *, force: bool = False, progress: bool = True, session: Any = None) -> WeightsFetch:
    """Download catalogued weights into ``$GEOLESF_HOME/weights`` (resumable, checked) unless a verified
    copy is there; pins the sha256 of the download when none is published."""
    from geolesf.data.fetch import download
    from geolesf.errors import ChecksumError

    entry = get_weights(name)
    if entry.path.is_file() and not force:
        try:
            path, digest = verify_local(entry, pin=False)
        except (ChecksumError, ModelError):
            pass  # a wrong or truncated copy: download again
        else:
            pinned = entry.sha256 is None and entry.pinned() is None
            if pinned:
                _pin(entry, digest)
            return WeightsFetch(entry, path, digest, "present", pinned)
    expected = entry.expected_sha256()  # a pin holds under --force too: delete the .sha256 file to re-pin
    digest = download(entry.urls, entry.path, size=entry.size, sha256=expected, session=session, progress=progress)
    pinned = entry.sha256 is None and expected is None
    if pinned:
        _pin(entry, digest)
    return WeightsFetch(entry, entry.path, digest, "downloaded", pinned)
