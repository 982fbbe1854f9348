"""Atomic output: every file geolesf writes appears at its destination complete or not at all.

:func:`atomic_path` yields a temporary name beside the destination (same folder, so the final
``os.replace`` is a rename on one filesystem) and renames it into place only when the block
finishes without an exception. :func:`check_tif_out` is the up-front check of a GeoTIFF
destination that every predictor and exporter shares.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from geolesf.errors import ConfigError, DataError

@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp", create: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary name is unique (``.NAME.XXXXXXXX<suffix>``): concurrent writers never share one.
    ``suffix`` keeps an extension a GDAL driver insists on (``.gpkg``); with ``create=False`` the
    temporary file does not exist yet when the block starts (for writers that refuse to open an
    existing file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    if not create:
        tmp_path.unlink()
    try:
        yield tmp_path
        # mkstemp creates the file private (0600); give the result the usual umask permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def check_tif_out(out: Path, what: str) -> None:
    """A :class:`DataError` unless ``out`` is a ``.tif``/``.tiff`` path in an existing folder."""
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise DataError(f"{what} {out}: expected a .tif path for the GeoTIFF output")
    if not out.parent.is_dir():
        raise DataError(f"{what} {out}: folder {out.parent} does not exist")


def write_json(path: str | Path, obj: Any, indent: int = 1) -> Path:
    """``obj`` as indented JSON at ``path``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, default=str) + "\n")
    return Path(path)


def write_yaml(path: str | Path, cfg: Any) -> Path:
    """A config dataclass (or dict) as YAML at ``path``, atomically."""
    import yaml

    from geolesf.config import to_dict

    data = to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    return Path(path)


# --------------------------------------------------------------------------------------------
# The output policy every command shares: no output may be an input, no existing output is
# replaced without ``--overwrite``, and one destination is written by one geolesf run at a time.
# --------------------------------------------------------------------------------------------

def _same_file(a: Path, b: Path) -> bool:
    """``a`` and ``b`` name the same file: equal resolved paths, or (both existing) the same inode."""
    try:
        if a.resolve() == b.resolve():
            return True
    except (OSError, RuntimeError):
        pass
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _as_path(p: Any) -> Path | None:
    """A path of an input or output spec (``PATH.mat:KEY`` keeps ``PATH``; ``MODEL:TAG`` is no file)."""
    if p is None:
        return None
    p = Path(str(p))
    if not p.exists() and ":" in p.name:
        head = p.with_name(p.name.split(":", 1)[0])
        if head.exists():
            return head
    return p


def check_outputs(inputs: Any, outputs: Any, *, overwrite: bool = False) -> None:
    """Refuse (one-line :class:`DataError`) to write an input or, without ``overwrite``, an existing file.

    ``inputs``: ``{label: path}`` or paths the command reads; ``outputs``: ``{label: path}`` or
    paths of everything it will write, sidecars included (``.qml``, ``.png``, ``.stac.json``,
    probabilities, GeoPackage). ``None`` entries are skipped. Paths are compared resolved, and by
    ``st_dev``/``st_ino`` when both exist (symlinks, hard links).
    """
    ins = _labelled(inputs, "input")
    outs = _labelled(outputs, "output")
    for olabel, out in outs:
        for ilabel, src in ins:
            if _same_file(out, src):
                raise DataError(f"{olabel} {out} is the same file as the {ilabel} {src}; choose another output path")
    seen: list[tuple[str, Path]] = []
    for olabel, out in outs:
        for plabel, prev in seen:
            if _same_file(out, prev):
                raise ConfigError(f"{olabel} {out} and {plabel} {prev} are the same file; choose different paths")
        seen.append((olabel, out))
        if out.is_dir():
            raise DataError(f"{olabel} {out}: is a folder, expected a file")
    if overwrite:
        return
    for olabel, out in outs:
        if out.exists() or out.is_symlink():
            raise DataError(f"{olabel} {out} exists already; pass --overwrite to replace it")


def _labelled(items: Any, default: str) -> list[tuple[str, Path]]:
    if items is None:
        return []
    pairs = items.items() if isinstance(items, dict) else ((default, p) for p in
                                                         ([items] if isinstance(items, (str, Path)) else items))
    result = []
    for label, p in pairs:
        path = _as_path(p)
        if path is not None:
            result.append((label, path))
    return result


def check_run_folder(folder: str | Path, *, overwrite: bool = False, resume: bool = False) -> None:
    """A training run folder must be empty (or absent) unless ``overwrite`` or ``resume``."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"run folder {folder} is a file; choose a folder path")
    if overwrite or resume or not folder.is_dir():
        return
    held = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    if held:
        shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
        raise ConfigError(f"run folder {folder} is not empty ({shown}); pass --overwrite to train into it "
                          "or choose a new --out")


def format_bytes(n: float) -> str:
    """``n`` bytes for a message: GB from 1 GB up, else MB (``0.3 MB``), never ``0.0 GB``."""
    if n >= 1e9:
        return f"{n / 1e9:.1f} GB"
    if n >= 1e5:
        return f"{n / 1e6:.1f} MB"
    return f"{max(n, 0) / 1e6:.2f} MB" if n >= 1e3 else f"{int(max(n, 0))} bytes"


def check_space(needs: Any, what: str = "the output") -> None:
    """Refuse to start when a destination folder cannot hold what goes into it.

    ``needs``: ``{path: bytes}`` of files to write; the bytes are added up per filesystem folder.
    """
    import shutil

    per_folder: dict[Path, int] = {}
    for path, n in (needs.items() if isinstance(needs, dict) else needs):
        folder = Path(path).parent
        key = next((f for f in per_folder if _same_device(f, folder)), folder)
        per_folder[key] = per_folder.get(key, 0) + int(n)
    for folder, need in per_folder.items():
        free = shutil.disk_usage(folder).free
        if need > free:
            raise DataError(f"{folder}: about {format_bytes(need)} are needed for {what}, "
                            f"only {format_bytes(free)} are free")


def _same_device(a: Path, b: Path) -> bool:
    try:
        return os.stat(a).st_dev == os.stat(b).st_dev
    except OSError:
        return a == b


_HELD: dict[str, list[Any]] = {}  # lock file path -> [fd, depth] held by this process


def lock_path(dest: str | Path) -> Path:
    dest = Path(os.path.abspath(dest))
    return dest.with_name(f".{dest.name}.lock")


@contextmanager
def output_lock(*destinations: Any) -> Iterator[None]:
    """Hold an exclusive, non-blocking lock on every destination for the block's duration.

    Each lock is ``fcntl.flock`` on a hidden ``.NAME.lock`` beside the destination (its pid inside).
    A destination already locked by another process raises a one-line :class:`DataError`
    ``… is being written by another geolesf run (pid N)``; locks this process holds are re-entrant.
    """
    taken: list[str] = []
    try:
        for dest in destinations:
            if dest is None:
                continue
            key = str(lock_path(dest))
            if key in _HELD:
                _HELD[key][1] += 1
            else:
                _HELD[key] = [_acquire(Path(key), Path(dest)), 1]
            taken.append(key)
        yield
    finally:
        for key in reversed(taken):
            _release(key)


def _acquire(lock: Path, dest: Path) -> int:
    import fcntl

    if not lock.parent.is_dir():
        raise DataError(f"{dest}: folder {lock.parent} does not exist")
    for _ in range(20):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            finally:
                os.close(fd)
            raise DataError(f"{dest} is being written by another geolesf run (pid {pid}); wait for it "
                            f"to finish (or remove {lock} if no such run exists)") from None
        # The lock file may have been removed (and re-created) by a run that finished meanwhile:
        # the lock only counts when the path still names the locked file.
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)
    raise DataError(f"{dest}: could not lock {lock}")


def _release(key: str) -> None:
    entry = _HELD[key]
    entry[1] -= 1
    if entry[1] > 0:
        return
    del _HELD[key]
    fd = entry[0]
    try:
        os.unlink(key)
    except OSError:
        pass
    os.close(fd)


@contextmanager
def output_folders(*outputs: Any) -> Iterator[list[Path]]:
    """Create the missing parent folders of ``outputs`` (paths or None) for the block.

    Yields the folders it created, parents first. When the block raises, those folders are removed
    again, deepest first and only while empty, so a failed command leaves no new folders behind
    (one that holds something, e.g. the state of an interrupted ``--resume`` run, is kept).
    """
    created: list[Path] = []
    try:
        for out in outputs:
            if out is None:
                continue
            missing, folder = [], Path(os.path.abspath(out)).parent
            while not folder.exists() and folder != folder.parent:
                missing.append(folder)
                folder = folder.parent
            if not folder.is_dir():
                raise DataError(f"{out}: {folder} is not a folder")
            for new in reversed(missing):
                try:
                    new.mkdir()
                except OSError as exc:
                    raise DataError(f"{out}: cannot create folder {new} ({exc.strerror})") from None
                created.append(new)
        yield created
    except BaseException:
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:
                pass
        raise
