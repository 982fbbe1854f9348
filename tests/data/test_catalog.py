"""The dataset catalog: every YAML validates, lookups, local search order and verify on real files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from geolesf.data import catalog
from geolesf.errors import DataError

YAMLS = sorted(catalog.CATALOG_DIR.glob("*.yaml"))

REQUIRED_ENTRIES = {
    "indian_pines", "indian_pines_dase", "pavia_university", "salinas", "salinas_a", "houston2013",
    "landsat7_rgb", "spacenet_sample", "potsdam", "vaihingen", "loveda", "voc2012", "coco2017",
    "ade20k", "pascal_context", "indian_pines_fixed_split", "pavia_university_fixed_split",
    "houston2013_fixed_split",
}


@pytest.mark.parametrize("path", YAMLS, ids=[p.stem for p in YAMLS])
def test_every_yaml_loads_and_validates(path: Path) -> None:
    entry = catalog.load_file(path)
    assert entry.name == path.stem
    assert entry.description and entry.licence and entry.citation
    for f in entry.files:
        if f.sha256 is None:
            assert f.note, f"{path.name}: {f.name} has no sha256 and no note"
    for c in entry.classes:
        assert c.colour.startswith("#") and len(c.colour) == 7
    if entry.classes:
        colours = [c.colour for c in entry.classes]
        assert len(set(colours)) == len(colours), f"{path.name}: class colours are not distinct"


def test_catalog_has_the_expected_entries() -> None:
    assert REQUIRED_ENTRIES <= set(catalog.list_datasets())


def test_indian_pines_facts() -> None:
    entry = catalog.get_dataset("indian_pines")
    assert entry.bands is not None and entry.bands.count == 200
    assert [c.name for c in entry.classes][:3] == ["Alfalfa", "Corn-notill", "Corn-mintill"]
    assert len(entry.classes) == 16
    cube = entry.file("IP_200_M.mat")
    assert cube.key == "data_M" and cube.loader == "geolesf.io.hsi.read_cube"
    assert cube.sha256 == "8bfb849c31ce3697b5317447064a17f146ae93f1849c07b7e9e5bbd79966315e"
    canonical = entry.file("Indian_pines_corrected.mat")
    assert canonical.sha256 is None and not canonical.required
    assert canonical.urls[0].startswith("https://www.ehu.eus/ccwintco/uploads/")


def test_dase_remap_matches_the_split_module() -> None:
    from geolesf.data.splits import DASE_INDIAN_PINES_REMAP

    assert catalog.get_dataset("indian_pines_dase").class_remap == dict(DASE_INDIAN_PINES_REMAP)


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(DataError, match="did you mean 'indian_pines'"):
        catalog.get_dataset("indian_pine")
    with pytest.raises(DataError, match="dataset 'indian_pines' has no file 'IP_200.mat'; did you mean"):
        catalog.get_dataset("indian_pines").file("IP_200.mat")


def test_verify_real_indian_pines_and_landsat(shared_data: Path) -> None:
    ip = catalog.verify("indian_pines")
    by_name = {s.file.name: s for s in ip}
    assert by_name["IP_200_M.mat"].status == "OK"
    assert by_name["IP_200_M.mat"].path == shared_data / "indian_pines" / "IP_200_M.mat"
    assert by_name["Indian_pines_gt.mat"].status == "OK"
    assert by_name["Indian_pines_corrected.mat"].status == "MISSING"  # optional, not in the shared data
    assert catalog.verify_ok(ip)
    landsat = catalog.verify("landsat7_rgb")
    assert [s.status for s in landsat] == ["OK"]
    assert landsat[0].path == shared_data / "rasterio_landsat7" / "RGB.byte.tif"


def test_no_present_real_file_mismatches(shared_data: Path) -> None:
    """Every catalogued checksum agrees with the real copy in GEOLESF_DATA, where there is one."""
    bad = [
        (name, s.file.name, s.detail)
        for name in catalog.list_datasets()
        for s in catalog.verify(name)
        if s.status == "MISMATCH"
    ]
    assert bad == []


def test_tampered_copy_is_a_mismatch(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "indian_pines"
    folder.mkdir()
    shutil.copy(shared_data / "indian_pines" / "Indian_pines_gt.mat", folder)
    tampered = folder / "IP_200_M.mat"
    data = bytearray((shared_data / "indian_pines" / "IP_200_M.mat").read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte changed
    tampered.write_bytes(bytes(data))
    monkeypatch.setenv("GEOLESF_DATA", str(tmp_path))
    statuses = {s.file.name: s for s in catalog.verify("indian_pines")}
    assert statuses["IP_200_M.mat"].status == "MISMATCH"
    assert statuses["IP_200_M.mat"].path == tampered  # GEOLESF_DATA is searched before the embedded copy
    assert "sha256" in statuses["IP_200_M.mat"].detail
    assert statuses["Indian_pines_gt.mat"].status == "OK"
    assert not catalog.verify_ok(list(statuses.values()))


def test_missing_file_is_missing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GEOLESF_DATA", str(tmp_path))  # empty: nothing there, nothing embedded
    statuses = catalog.verify("indian_pines_fixed_split")
    assert [s.status for s in statuses] == ["MISSING", "MISSING"]
    assert not catalog.verify_ok(statuses)


def test_unknown_checksum_status(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    home_copy = tmp_path / "home" / "data" / "salinas"
    home_copy.mkdir(parents=True)
    shutil.copy(shared_data / "indian_pines" / "Indian_pines_gt.mat", home_copy / "Salinas_gt.mat")
    monkeypatch.setenv("GEOLESF_HOME", str(tmp_path / "home"))
    status = {s.file.name: s for s in catalog.verify("salinas")}["Salinas_gt.mat"]
    assert status.status == "UNKNOWN-CHECKSUM"
    assert status.found_sha256 == "65c4687a8ab04f6da4789799bc3bc4f6e88bccac3ed6a2e6ae367e5e6b9e429c"


def test_dataset_path_search_order(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    assert catalog.dataset_path("indian_pines") == shared_data / "indian_pines" / "IP_200_M.mat"
    assert catalog.dataset_path("indian_pines", "Indian_pines_gt.mat").name == "Indian_pines_gt.mat"
    monkeypatch.delenv("GEOLESF_DATA")
    embedded = catalog.dataset_path("indian_pines", "IP_200_M.mat")
    assert embedded == Path(catalog.__file__).resolve().parents[1] / "embedded" / "indian_pines" / "IP_200_M.mat"
    home = tmp_path / "home"
    (home / "data" / "landsat7_rgb").mkdir(parents=True)
    shutil.copy(shared_data / "rasterio_landsat7" / "RGB.byte.tif", home / "data" / "landsat7_rgb")
    monkeypatch.setenv("GEOLESF_HOME", str(home))
    assert catalog.dataset_path("landsat7_rgb", "RGB.byte.tif") == home / "data" / "landsat7_rgb" / "RGB.byte.tif"


def test_dataset_path_missing_says_how_to_get_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GEOLESF_DATA", str(tmp_path))
    with pytest.raises(DataError, match=r"geolesf data fetch salinas --file Salinas_corrected.mat"):
        catalog.dataset_path("salinas")
    with pytest.raises(DataError, match="data request form"):
        catalog.dataset_path("potsdam")


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """\
name: {name}
description: test entry
modality: hyperspectral
sensor: test
licence: CC0
citation: none
files:
  - name: a.bin
    sha256: {sha}
"""


@pytest.mark.parametrize(
    ("body", "key", "message"),
    [
        (GOOD.format(name="bad", sha="abc"), "files[0].sha256", "64 lowercase hex"),
        (GOOD.format(name="bad", sha="null"), "files[0].note", "required when sha256 is null"),
        (GOOD.format(name="bad", sha="a" * 64).replace("  - name: a.bin\n", "  - name: a.bin\n    sizes: 3\n"),
         "files[0].sizes", "unknown key"),
        (GOOD.format(name="bad", sha="a" * 64).replace("modality: hyperspectral", "modality: radar"),
         "modality", "expected one of"),
        (GOOD.format(name="bad", sha="a" * 64) + "classes:\n  - {id: 1, name: x, colour: red}\n",
         "classes[0].colour", "hex colour"),
        (GOOD.format(name="bad", sha="a" * 64).replace("    sha256:", "    urls: [ftp://x]\n    sha256:"),
         "files[0].urls[0]", "http(s) URL"),
        (GOOD.format(name="other", sha="a" * 64), "name", "differs from the file name"),
        (GOOD.format(name="bad", sha="a" * 64).replace("  - name: a.bin", "  - name: ../a.bin"),
         "files[0].name", "relative POSIX path"),
        (GOOD.format(name="bad", sha="a" * 64) + "download:\n  allowed: false\n", "download.note", "required"),
    ],
)
def test_schema_errors_name_file_and_key(tmp_path: Path, body: str, key: str, message: str) -> None:
    path = _write(tmp_path, "bad", body)
    with pytest.raises(DataError) as info:
        catalog.load_file(path)
    text = str(info.value)
    assert str(path) in text and f"key '{key}'" in text and message in text


def test_missing_sha256_key_is_an_error(tmp_path: Path) -> None:
    body = GOOD.format(name="bad", sha="x").replace("    sha256: x\n", "")
    with pytest.raises(DataError, match=r"key 'files\[0\].sha256': missing"):
        catalog.load_file(_write(tmp_path, "bad", body))


def test_user_catalog_adds_and_overrides(tmp_path: Path, monkeypatch) -> None:
    _write(tmp_path, "my_scene", GOOD.format(name="my_scene", sha="a" * 64))
    override = GOOD.format(name="salinas", sha="b" * 64).replace("sensor: test", "sensor: mirror")
    _write(tmp_path, "salinas", override)
    monkeypatch.setenv("GEOLESF_CATALOG", str(tmp_path))
    assert "my_scene" in catalog.list_datasets()
    assert catalog.get_dataset("salinas").sensor == "mirror"
    monkeypatch.delenv("GEOLESF_CATALOG")
    assert "my_scene" not in catalog.list_datasets()
    assert catalog.get_dataset("salinas").sensor == "AVIRIS"
