"""The documentation site: generated pages up to date, ``mkdocs build --strict`` green."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("script", ["gen_cli_docs.py", "gen_model_zoo.py"])
def test_generated_pages_are_up_to_date(script):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--check"], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_cli_reference_lists_every_subcommand():
    sys.path.insert(0, str(ROOT / "scripts"))
    from gen_cli_docs import _subparsers

    from geolesf.cli.main import build_parser

    text = (ROOT / "docs" / "cli.md").read_text()
    names = list(_subparsers(build_parser()))
    assert "predict" in names and "train" in names
    for name in names:
        assert f"`geolesf {name}`" in text, name
    assert "--stac" in text


def test_mkdocs_build_strict(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for page in ("index.html", "cli/index.html", "models/index.html", "architecture/index.html",
                 "xarray/index.html", "stac/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
