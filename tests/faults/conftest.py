"""Helpers for the fault and hostile-input tests: run a command in a fresh process as a user would."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Run:
    code: int
    out: str
    err: str

    def assert_user_error(self, *fragments: str) -> str:
        """Exit 2, exactly one ``error:`` line on stderr that names every fragment, and no traceback."""
        lines = [ln for ln in self.err.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error: ")]
        assert self.code == 2, f"exit {self.code}\n{self.err[-2000:]}"
        assert len(errors) == 1, self.err[-2000:]
        assert "Traceback" not in self.err, self.err[-2000:]
        for fragment in fragments:
            assert fragment in errors[0], errors[0]
        return errors[0]


def geolesf(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 600) -> Run:
    """``geolesf ARGS`` in a fresh interpreter (no progress bars), as ``Run``."""
    proc = subprocess.run([sys.executable, "-m", "geolesf.cli.main", *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, "TQDM_DISABLE": "1", **(env or {})}, cwd=cwd,
                          timeout=timeout)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture()
def run_geolesf():
    return geolesf
