"""The geolesf executable the provider tests run: this environment's, importing this checkout.

The executable beside ``sys.executable`` (else ``python -m geolesf``) behind a two-line shell wrapper
that puts this checkout first on ``PYTHONPATH``: the provider removes QGIS's ``PYTHONPATH`` from the
child's environment, and the checkout (not an installed copy) is what is under test.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def geolesf_command() -> list[str]:
    beside = Path(sys.executable).with_name("geolesf")
    return [str(beside)] if beside.is_file() else [sys.executable, "-m", "geolesf"]


def wrapper(folder: Path) -> Path:
    """Write ``folder/geolesf`` and return its path."""
    exe = folder / "geolesf"
    exe.write_text(f"#!/bin/sh\nPYTHONPATH={shlex.quote(str(ROOT))} exec {shlex.join(geolesf_command())} \"$@\"\n")
    exe.chmod(0o755)
    return exe
