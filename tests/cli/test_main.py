from __future__ import annotations

import subprocess
import sys

import pytest

from geolesf import __version__
from geolesf.cli.main import SUBCOMMANDS, main


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys\n"
        "from geolesf.cli.main import build_parser\n"
        "build_parser().format_help()\n"
        "heavy = [m for m in ('torch', 'rasterio', 'lightning', 'sklearn', 'numpy') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    assert out == "", f"geolesf --help imported {out}"


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"geolesf {__version__}"


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "usage: geolesf" in capsys.readouterr().out


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert f"usage: geolesf {command.replace('_', '-')}" in text
    assert len(text.splitlines()) > 3


def test_export_missing_class_map_is_a_user_error(tmp_path, capsys):
    out = tmp_path / "x.gpkg"
    assert main(["export", str(tmp_path / "map.tif"), "--gpkg", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert "map.tif" in err
    assert not out.exists()


def test_debug_shows_traceback(tmp_path):
    from geolesf.errors import GeolesfError

    with pytest.raises(GeolesfError):
        main(["--debug", "export", str(tmp_path / "map.tif"), "--gpkg", str(tmp_path / "x.gpkg")])


def test_console_script_exit_code(tmp_path):
    out = tmp_path / "x.gpkg"
    proc = subprocess.run(
        [sys.executable, "-m", "geolesf.cli.main", "export", str(tmp_path / "m.tif"), "--gpkg", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert not out.exists()
