"""Shared fixtures, and where the tests' real data comes from.

``shared_data`` is the real-data folder. With ``GEOLESF_DATA`` naming the shared folder (CI points it
at ``../shared/data``) every test runs. Without it (a fresh clone), the redistributable real files
shipped with the project — ``geolesf/embedded`` and ``tests/fixtures`` — are laid out in the same
structure in a temporary folder, ``GEOLESF_DATA`` is pointed there for the session, and the tests that
need data which may not be redistributed (marked ``@pytest.mark.shared_data("voc_samples", ...)``) are
skipped with the reason. With ``GEOLESF_REQUIRE_DATA=1`` (``.ci/run`` sets it) such a skip is a failure.
The run ends with a line counting the data tests that ran and were skipped.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = ROOT / "geolesf" / "embedded"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

#: Files that may be redistributed, by their path in the shared data folder → the shipped copy.
REDISTRIBUTABLE = {
    "indian_pines/IP_200_M.mat": EMBEDDED / "indian_pines" / "IP_200_M.mat",
    "indian_pines/Indian_pines_gt.mat": EMBEDDED / "indian_pines" / "Indian_pines_gt.mat",
    "indian_pines/indianpines_ts.tif": EMBEDDED / "indian_pines" / "indianpines_ts.tif",
    "rasterio_landsat7/RGB.byte.tif": EMBEDDED / "landsat7" / "RGB.byte.tif",
    "spacenet_solaris/sample_geotiff.tif": FIXTURES / "spacenet_solaris" / "sample_geotiff.tif",
    "spacenet_solaris/geotiff_labels.geojson": FIXTURES / "spacenet_solaris" / "geotiff_labels.geojson",
    "spacenet_solaris/ms1.tif": FIXTURES / "spacenet_solaris" / "ms1.tif",
}

#: Shared folders that may not be redistributed, and why (the skip reason names it).
NOT_REDISTRIBUTABLE = {
    "indian_pines_fixed_split": "GPL-3.0 split maps",
    "pavia_university_fixed_split": "GPL-3.0 split maps",
    "houston2013_fixed_split": "GPL-3.0 split maps, GRSS DFC 2013 terms",
    "pavia_university": "not cleared for redistribution",
    "voc_samples": "PASCAL VOC terms",
    "coco_samples": "Flickr terms of the COCO images",
    "ade20k_samples": "ADE20K terms",
    "rs_seg_tiles": "LoveDA CC BY-NC-SA, ISPRS Potsdam/Vaihingen terms",
}

REQUIRE_ENV = "GEOLESF_REQUIRE_DATA"


def _shared_root() -> tuple[Path | None, str]:
    value = os.environ.get("GEOLESF_DATA")
    if not value:
        return None, "GEOLESF_DATA is not set"
    if not Path(value).is_dir():
        return None, f"GEOLESF_DATA={value} is not a directory"
    return Path(value), ""


SHARED_ROOT, NO_SHARED_REASON = _shared_root()
REQUIRED = os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "shared_data(*folders): needs these folders of the shared data, which may not be redistributed")
    if SHARED_ROOT is None and REQUIRED:
        raise pytest.UsageError(f"{REQUIRE_ENV} is set but {NO_SHARED_REASON}")


@pytest.fixture(scope="session")
def shared_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real-data folder: ``GEOLESF_DATA``, or the shipped redistributable files in its layout."""
    if SHARED_ROOT is not None:
        return SHARED_ROOT
    root = tmp_path_factory.mktemp("shipped_data")
    for rel, src in REDISTRIBUTABLE.items():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    os.environ["GEOLESF_DATA"] = str(root)  # configs and loaders that read $GEOLESF_DATA find the same files
    return root


def _needed(item: pytest.Item) -> list[str]:
    return [folder for mark in item.iter_markers("shared_data") for folder in mark.args]


def pytest_runtest_setup(item: pytest.Item) -> None:
    folders = _needed(item)
    if not folders:
        return
    missing = [f for f in folders if SHARED_ROOT is None or not (SHARED_ROOT / f).exists()]
    if not missing:
        return
    why = "; ".join(f"{f} ({NOT_REDISTRIBUTABLE.get(f, 'shared data only')})" for f in missing)
    where = NO_SHARED_REASON or f"missing from GEOLESF_DATA={SHARED_ROOT}"
    message = f"needs shared data not shipped with geolesf: {why}; {where}"
    if REQUIRED:
        pytest.fail(f"{message} ({REQUIRE_ENV} is set)", pytrace=False)
    MISSING.update(missing)
    pytest.skip(message)


#: Data tests (marked ``shared_data``) that ran and that were skipped in this session.
DATA_TESTS: Counter = Counter()
#: Shared folders that skipped tests needed, with how many tests needed each.
MISSING: Counter = Counter()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "shared_data" not in report.keywords:
        return
    if report.skipped and report.when == "setup":
        DATA_TESTS["skipped"] += 1
    elif report.when == "call":
        DATA_TESTS["ran"] += 1


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    counts = DATA_TESTS
    if not counts:
        return
    source = f"GEOLESF_DATA={SHARED_ROOT}" if SHARED_ROOT else f"shipped data only ({NO_SHARED_REASON})"
    line = f"data tests (shared, not redistributable): {counts['ran']} ran, {counts['skipped']} skipped; {source}"
    terminalreporter.write_line(line)
    if counts["skipped"]:
        why = ", ".join(f"{f} ({NOT_REDISTRIBUTABLE.get(f, 'shared data only')}): {n}" for f, n in MISSING.most_common())
        terminalreporter.write_line(f"skipped because geolesf may not ship the data they need — {why}; point "
                                    "GEOLESF_DATA at the shared data folder to run them")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own empty GEOLESF_HOME so nothing leaks into ~/.cache."""
    home = tmp_path_factory.mktemp("geolesf_home")
    monkeypatch.setenv("GEOLESF_HOME", str(home))
    yield home
