"""The README's command lines run as written, from a folder outside the clone.

Every ``geolesf …`` line of the README's ```` ```bash ```` blocks (continuation lines joined) is either
run — in order, in one empty temporary folder, with an empty ``GEOLESF_HOME`` and no ``GEOLESF_DATA``,
so nothing from the clone's working folder or the shared test data can help — and must exit 0, or
carries a comment starting with ``needs:`` (a download, the user's own files, hours of CPU). Those are
not run; their flags must still parse and the configs they name must be shipped. The ``make demo``
recipe gets the same parse check.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


@dataclass(frozen=True)
class Command:
    line: str
    """The command as written (continuations joined, comment removed)."""
    needs: str
    """What the ``needs:`` comment says it also needs; empty for a command that runs as written."""

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.line)


def readme_commands(text: str) -> list[Command]:
    """The ``geolesf`` command lines of the ```` ```bash ```` blocks of ``text``, in order."""
    out: list[Command] = []
    fence, pending = None, ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("```"):
            fence = stripped[3:].strip() if fence is None else None
            continue
        if fence != "bash":
            continue
        if pending or stripped.startswith("geolesf "):
            if stripped.endswith("\\"):
                pending += stripped[:-1].rstrip() + " "
                continue
            line, pending = pending + stripped, ""
            code, _, comment = line.partition(" # ")
            comment = comment.strip()
            needs = comment[len("needs:"):].strip() if comment.startswith("needs:") else ""
            out.append(Command(code.strip(), needs))
    return out


def _geolesf_lines_outside_bash(text: str) -> list[str]:
    lines, fence = [], None
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("```"):
            fence = stripped[3:].strip() if fence is None else None
            continue
        if fence is not None and fence != "bash" and stripped.startswith("geolesf "):
            lines.append(stripped)
    return lines


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))


def _parse(argv: list[str]) -> object:
    from geolesf.cli.main import build_parser

    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse reports a bad flag by exiting 2
        raise AssertionError(f"geolesf {shlex.join(argv)}: flags do not parse (exit {exc.code})") from None


def test_the_readme_commands_are_found():
    assert _geolesf_lines_outside_bash(README.read_text(encoding="utf-8")) == []
    lines = [c.line for c in COMMANDS]
    assert len(COMMANDS) >= 30
    assert "geolesf predict indian_pines --checkpoint s2mamba:indian_pines_dase --out maps/indian_pines.tif" in lines
    runnable = [c for c in COMMANDS if not c.needs]
    assert len(runnable) >= 15 and any(c.argv[1] == "train" for c in runnable)
    assert all(not re.search(r"\[|\]|\.\.\.|…", c.line) for c in runnable), "placeholders in a runnable line"


def test_the_extraction_rule():
    text = ("```bash\ngeolesf a --x 1 \\\n   --y 2   # needs: a download\ngeolesf b  # a note\nmake demo\n```\n"
            "```python\ngeolesf.list_models()\n```\n")
    assert readme_commands(text) == [Command("geolesf a --x 1 --y 2", "a download"), Command("geolesf b", "")]


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.argv[1:] not in (["--help"], ["--version"])],
                         ids=lambda c: c.line[:70])
def test_each_command_parses_and_names_shipped_configs(command):
    from geolesf.paths import find_config

    args = _parse(command.argv[1:])
    if getattr(args, "config", None):
        assert find_config(args.config).is_file()


def test_make_demo_parses_and_names_a_dataset():
    from geolesf.data.sources import resolve_source

    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    values = dict(re.findall(r"^(DEMO_\w+) := (\S+)$", makefile, flags=re.M))
    recipe = re.findall(r"^\t\$\(BIN\)/geolesf (.+)$", makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0], flags=re.M)
    assert len(recipe) == 3
    for line in recipe:
        _parse(shlex.split(re.sub(r"\$\((DEMO_\w+)\)", lambda m: values[m.group(1)], line)))
    assert Path(str(resolve_source(values["DEMO_CUBE"], "scene")).rpartition(":")[0]).is_file()


@pytest.mark.slow
def test_the_readme_commands_run_as_written(tmp_path):
    """Minutes on a CPU: the rf/svm baselines, a 2-epoch S²Mamba run and the demo prediction."""
    env = {k: v for k, v in os.environ.items() if k not in ("GEOLESF_DATA", "GEOLESF_CATALOG")}
    env.update(GEOLESF_HOME=str(tmp_path / "home"), PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
               GEOLESF_OFFLINE="1")
    work = tmp_path / "work"
    work.mkdir()
    for command in COMMANDS:
        if command.needs:
            continue
        proc = subprocess.run([sys.executable, "-m", "geolesf.cli.main", *command.argv[1:]], cwd=work, env=env,
                              capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, f"{command.line}\n{proc.stderr[-3000:]}"
    for made in ("runs/ip_rf/metrics.json", "runs/ip_svm/classmap.tif", "runs/ip_s2m/model.pt",
                 "runs/ip_s2m/config.yaml", "runs/ip_s2m/evaluation_dase.json", "runs/indian_pines_rf/metrics.json",
                 "maps/indian_pines.tif", "maps/indian_pines.qml", "maps/indian_pines.gpkg"):
        assert (work / made).is_file(), made
    assert not (work / "runs/ip_s2m/classmap.tif").exists()  # --no-scene-map
