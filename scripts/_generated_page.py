"""Write a generated documentation page, or (``--check``) fail when the committed one is stale."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def generate(target: Path, render: Callable[[], str], description: str, argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--check", action="store_true", help=f"only compare; exit 1 if {target.name} is stale")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        if not target.is_file() or target.read_text() != text:
            print(f"{target} is out of date: run python scripts/{Path(sys.argv[0]).name}", file=sys.stderr)
            return 1
        print(f"{target} is up to date")
        return 0
    target.write_text(text)
    print(f"wrote {target}")
    return 0
