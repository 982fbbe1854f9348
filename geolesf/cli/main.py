"""``geolesf`` entry point: parses arguments and hands over to the library.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` and
``run(args) -> int``. Only argparse is imported here; the library (and torch) is imported
inside ``run`` so that ``geolesf --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys

from geolesf import __version__

SUBCOMMANDS = ("data", "weights", "train", "evaluate", "predict", "export", "export_model", "pseudo_label",
               "qgis_plugin")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geolesf",
        description="Remote-sensing and geospatial machine learning: hyperspectral classification "
        "(S²Mamba), tiled georeferenced prediction, dataset and weights catalogs.",
    )
    parser.add_argument("--version", action="version", version=f"geolesf {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument(
        "--offline", action="store_true", help="never touch the network (also GEOLESF_OFFLINE=1)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"geolesf.cli.{name}").add_parser(sub)
    return parser


def _close_progress_bars() -> None:
    """Close tqdm bars left open by an exception, so that the error starts its own line."""
    tqdm = sys.modules.get("tqdm")
    if tqdm is None:
        return
    for bar in list(getattr(tqdm.tqdm, "_instances", ())):
        with contextlib.suppress(Exception):  # a broken bar must not hide the error
            bar.close()
    sys.stderr.flush()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """A warning on the terminal as one ``warning: …`` line (no source file, no code line)."""
    return f"warning: {_one_line(message) if isinstance(message, Warning) else message}\n"


def os_error_message(exc: BaseException) -> str | None:
    """One line for an OSError a user can cause (permissions, full or read-only disk, folder for a file)
    or a GDAL/rasterio read or write failure (truncated file, disk full while GDAL writes).

    None for the others, which are bugs and keep their traceback.
    """
    import errno

    if type(exc).__module__.startswith("rasterio") and (isinstance(exc, OSError) or "CPLE_" in type(exc).__name__
                                                        or "IOError" in type(exc).__name__):
        return _one_line(exc) or type(exc).__name__
    if not isinstance(exc, OSError):
        return None

    # a rename (temp file → destination) names the destination, the path the user gave
    path = exc.filename2 if exc.filename2 is not None else exc.filename if exc.filename is not None else ""
    where = f"{path}: " if path else ""
    reasons = {
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: "read-only file system",
        errno.EISDIR: "is a folder, expected a file",
        errno.ENOTDIR: "a part of the path is not a folder",
        errno.ENOENT: "no such file or folder",
        errno.EFBIG: "file too large for the file system",
        errno.ENAMETOOLONG: "file name too long",
    }
    if isinstance(exc, PermissionError) and exc.errno not in reasons:
        return f"{where}permission denied"
    if exc.errno in reasons:
        return f"{where}{reasons[exc.errno]}"
    return None


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM (CTRL_BREAK on Windows) raises KeyboardInterrupt, as Ctrl-C does, for the block.

    A process manager (the QGIS provider cancelling a run, ``timeout``, a batch system) stops geolesf
    with SIGTERM, whose default action ends the process at once: temporary files and partial outputs
    would stay. As an exception, the cleanup of :mod:`geolesf.io.atomic` and of the predictors runs.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = [getattr(signal, name) for name in ("SIGTERM", "SIGBREAK") if hasattr(signal, name)]
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.offline:
        import os

        os.environ["GEOLESF_OFFLINE"] = "1"
    import warnings

    from geolesf.errors import GeolesfError

    # Status lines (stdout) and warnings / progress bars (stderr) in the order they happen, also
    # when both go to one pipe or file: stdout is otherwise block-buffered there and lags behind.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    # geolesf's own warnings each time they happen (every seed, every scene), not once per session
    warnings.filterwarnings("always", category=UserWarning, module=r"geolesf(\.|$)")
    formatwarning = warnings.formatwarning
    if not args.debug:
        warnings.formatwarning = _format_warning
    try:
        with _terminate_as_interrupt():
            return int(args.func(args) or 0)
    except GeolesfError as exc:
        if args.debug:
            raise
        _close_progress_bars()
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # only OSError and GDAL I/O errors become one line
        message = os_error_message(exc)
        if args.debug or message is None:
            raise
        _close_progress_bars()
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _close_progress_bars()
        print("error: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatwarning


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
