"""Shared fixtures.

``shared_data`` is the real data folder named by ``GEOLESF_DATA`` (CI points it at
``../shared/data``). A test that needs it fails, never skips, when it is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    value = os.environ.get("GEOLESF_DATA")
    if not value:
        pytest.fail("GEOLESF_DATA is not set: point it at the shared real-data folder (../shared/data)")
    path = Path(value)
    if not path.is_dir():
        pytest.fail(f"GEOLESF_DATA={value} is not a directory")
    return path


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own empty GEOLESF_HOME so nothing leaks into ~/.cache."""
    home = tmp_path_factory.mktemp("geolesf_home")
    monkeypatch.setenv("GEOLESF_HOME", str(home))
    yield home
