"""``geolesf`` entry point: parses arguments and hands over to the library.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` and
``run(args) -> int``. Only argparse is imported here; the library (and torch) is imported
inside ``run`` so that ``geolesf --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from geolesf import __version__

SUBCOMMANDS = ("data", "train", "evaluate", "predict", "export", "pseudo_label")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geolesf",
        description="Remote-sensing and geospatial machine learning: hyperspectral classification "
        "(S²Mamba), tiled georeferenced prediction, dataset catalog.",
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.offline:
        import os

        os.environ["GEOLESF_OFFLINE"] = "1"
    from geolesf.errors import GeolesfError

    try:
        return int(args.func(args) or 0)
    except GeolesfError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
