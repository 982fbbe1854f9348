"""``geolesf data list | info | verify | fetch`` through the real entry point."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from geolesf.cli import main as cli_main
from tests.data.test_fetch import DASE_SHA, LoopbackServer


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli_main.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.shared_data("rs_seg_tiles")
def test_data_list(shared_data: Path, capsys) -> None:
    code, out, _ = run(["data", "list"], capsys)
    assert code == 0
    header, rule, *rows = out.splitlines()
    assert header.split() == ["NAME", "MODALITY", "SIZE", "LICENCE", "LOCAL"]
    by_name = {row.split()[0]: row for row in rows}
    assert {"indian_pines", "salinas", "potsdam", "voc2012"} <= set(by_name)
    assert by_name["indian_pines"].split()[1] == "hyperspectral"
    assert by_name["indian_pines"].rstrip().endswith("yes")
    assert by_name["salinas"].rstrip().endswith("no")
    assert by_name["potsdam"].rstrip().endswith("partial")  # only the test sample tiles are present


def test_data_info(capsys) -> None:
    code, out, _ = run(["data", "info", "indian_pines"], capsys)
    assert code == 0
    for expected in (
        "bands:     200, 400–2500 nm",
        "#e6194b  Alfalfa",
        "Stone-Steel-Towers",
        "IP_200_M.mat",
        "sha256: 8bfb849c31ce3697b5317447064a17f146ae93f1849c07b7e9e5bbd79966315e",
        "https://www.ehu.eus/ccwintco/uploads/6/67/Indian_pines_corrected.mat",
        "sha256: unknown",
        "doi:10.4231/R7RX991C",
        "key: data_M",
    ):
        assert expected in out, expected
    code, out, _ = run(["data", "info", "indian_pines_dase"], capsys)
    assert code == 0 and "1→2, 2→3, 3→5" in out


def test_data_verify_ok(shared_data: Path, capsys) -> None:
    code, out, _ = run(["data", "verify", "indian_pines"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert any(line.startswith("OK") and "IP_200_M.mat" in line for line in lines)
    assert any(line.startswith("MISSING") and "Indian_pines_corrected.mat" in line and "(optional)" in line for line in lines)
    assert lines[-1].startswith("indian_pines: OK")
    code, out, _ = run(["data", "verify", "landsat7_rgb"], capsys)
    assert code == 0 and out.startswith("OK")


def test_data_verify_missing_and_mismatch_exit_1(shared_data: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("GEOLESF_DATA", str(tmp_path))
    code, out, _ = run(["data", "verify", "pavia_university_fixed_split"], capsys)
    assert code == 1 and out.count("MISSING") >= 2 and "FAILED" in out
    (tmp_path / "rasterio_landsat7").mkdir()
    shutil.copy(shared_data / "indian_pines" / "Indian_pines_gt.mat", tmp_path / "rasterio_landsat7" / "RGB.byte.tif")
    code, out, _ = run(["data", "verify", "landsat7_rgb"], capsys)
    assert code == 1 and out.startswith("MISMATCH")


def test_unknown_dataset_exit_2_one_line(capsys) -> None:
    for action in ("info", "verify", "fetch"):
        code, out, err = run(["data", action, "indian_pine"], capsys)
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and err.startswith("error: unknown dataset 'indian_pine'")
        assert "did you mean 'indian_pines'" in err


def test_fetch_restricted_dataset_exit_2(capsys) -> None:
    code, _, err = run(["data", "fetch", "vaihingen"], capsys)
    assert code == 2 and err.startswith("error: vaihingen cannot be downloaded automatically")


def _mirror_catalog(folder: Path, name: str, url: str) -> None:
    """A user catalog entry (GEOLESF_CATALOG) whose URL points at the loopback server."""
    text = (Path(cli_main.__file__).resolve().parents[1] / "data_catalog" / "indian_pines_dase.yaml").read_text()
    start = text.index("    urls:\n")
    end = text.index("    size:", start)
    text = text[:start] + f"    urls:\n      - {url}\n" + text[end:]
    text = text.replace("name: indian_pines_dase", f"name: {name}")
    text = text[: text.index("local:")]  # no local hints: only the data home counts
    (folder / f"{name}.yaml").write_text(text)


@pytest.fixture
def loopback(shared_data: Path, tmp_path: Path):
    root = tmp_path / "served"
    root.mkdir()
    shutil.copy(shared_data / "indian_pines" / "indianpines_ts.tif", root)
    with LoopbackServer(root) as server:
        yield server


def test_fetch_through_the_cli(loopback: LoopbackServer, tmp_path: Path, monkeypatch, capsys) -> None:
    catalog_dir = tmp_path / "catalog"
    catalog_dir.mkdir()
    _mirror_catalog(catalog_dir, "dase_loopback", loopback.url("indianpines_ts.tif"))
    monkeypatch.setenv("GEOLESF_CATALOG", str(catalog_dir))
    home = Path(os.environ["GEOLESF_HOME"])

    code, out, err = run(["data", "fetch", "dase_loopback", "--no-progress"], capsys)
    target = home / "data" / "dase_loopback" / "indianpines_ts.tif"
    assert code == 0, err
    assert f"downloaded {target}" in " ".join(out.split())
    assert DASE_SHA in out and "verified" in out
    assert target.is_file() and len(loopback.requests) == 1

    code, out, _ = run(["data", "fetch", "dase_loopback", "--no-progress"], capsys)
    assert code == 0 and out.startswith("present") and len(loopback.requests) == 1

    dest = tmp_path / "elsewhere"
    code, out, _ = run(["data", "fetch", "dase_loopback", "--file", "indianpines_ts.tif", "--dest", str(dest), "--no-progress"], capsys)
    assert code == 0 and (dest / "indianpines_ts.tif").read_bytes() == target.read_bytes()

    code, out, _ = run(["data", "verify", "dase_loopback"], capsys)
    assert code == 0 and out.startswith("OK")


def test_fetch_offline_flag_refuses(loopback: LoopbackServer, tmp_path: Path, monkeypatch, capsys) -> None:
    catalog_dir = tmp_path / "catalog"
    catalog_dir.mkdir()
    _mirror_catalog(catalog_dir, "dase_loopback", loopback.url("indianpines_ts.tif"))
    monkeypatch.setenv("GEOLESF_CATALOG", str(catalog_dir))
    monkeypatch.setenv("GEOLESF_OFFLINE", "0")  # main() sets it to 1; monkeypatch restores it
    code, _, err = run(["--offline", "data", "fetch", "dase_loopback"], capsys)
    assert code == 2 and err.startswith("error: offline mode")
    assert loopback.requests == []


def test_fetch_http_error_exit_2(loopback: LoopbackServer, tmp_path: Path, monkeypatch, capsys) -> None:
    catalog_dir = tmp_path / "catalog"
    catalog_dir.mkdir()
    _mirror_catalog(catalog_dir, "dase_loopback", loopback.url("missing.tif"))
    monkeypatch.setenv("GEOLESF_CATALOG", str(catalog_dir))
    code, _, err = run(["data", "fetch", "dase_loopback", "--no-progress"], capsys)
    last = err.splitlines()[-1]  # progress lines may come first; the error is one line
    assert code == 2 and last.startswith("error: ") and "HTTP 404" in last
    assert sum(line.startswith("error:") for line in err.splitlines()) == 1


def test_data_path_prints_local_files(tmp_path, monkeypatch, capsys):
    from geolesf.cli.main import main as cli_main
    from geolesf.paths import embedded_data_root

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GEOLESF_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GEOLESF_DATA", raising=False)
    assert cli_main(["data", "path", "indian_pines", "--role", "cube"]) == 0
    assert capsys.readouterr().out.splitlines() == [str(embedded_data_root() / "indian_pines" / "IP_200_M.mat")]
    assert cli_main(["data", "path", "indian_pines"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert cli_main(["data", "path", "salinas"]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "geolesf data fetch salinas" in err and len(err.strip().splitlines()) == 1
