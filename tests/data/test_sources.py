"""Dataset names where a file is expected (geolesf.data.sources), on the catalog's real entries."""

from __future__ import annotations

import pytest

from geolesf.config import DataConfig
from geolesf.data.sources import dataset_file_paths, is_bare_name, resolve_data, resolve_source
from geolesf.errors import DataError
from geolesf.io.hsi import read_cube, read_labels
from geolesf.paths import embedded_data_root

EMBEDDED = embedded_data_root() / "indian_pines"


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A working folder outside the clone, an empty GEOLESF_HOME and no GEOLESF_DATA."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GEOLESF_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GEOLESF_DATA", raising=False)
    return tmp_path


def test_bare_name_rule():
    assert is_bare_name("indian_pines") and is_bare_name("salinas_a")
    for text in ("cube.mat", "a/b", "x:KEY", "indian-pines", "", "./indian_pines"):
        assert not is_bare_name(text), text


def test_names_resolve_to_the_file_of_each_role(elsewhere):
    cube = resolve_source("indian_pines", "cube")
    assert cube == f"{EMBEDDED / 'IP_200_M.mat'}:data_M"
    assert read_cube(cube).shape == (145, 145, 200)
    labels = resolve_source("indian_pines", "labels")
    assert labels == f"{EMBEDDED / 'Indian_pines_gt.mat'}:indian_pines_gt"
    assert int((read_labels(labels).data > 0).sum()) == 10249
    assert resolve_source("indian_pines_dase", "train_map") == str(EMBEDDED / "indianpines_ts.tif")
    assert resolve_source("landsat7_rgb", "scene").endswith("RGB.byte.tif")


def test_files_and_other_values_pass_unchanged(elsewhere):
    (elsewhere / "indian_pines").write_bytes(b"a file of that name wins")
    assert resolve_source("indian_pines", "cube") == "indian_pines"
    assert resolve_source(None, "cube") is None
    assert resolve_source("some/where/cube.tif", "cube") == "some/where/cube.tif"  # the reader says it is missing


def test_unknown_name_lists_close_names(elsewhere):
    with pytest.raises(DataError, match=r"--cube indain_pines: .*did you mean 'indian_pines'.*geolesf data list"):
        resolve_source("indain_pines", "cube")


def test_missing_catalogued_file_says_which_dataset(elsewhere):
    with pytest.raises(DataError, match=r"IP_200_M\.mat: file not found; .* 'indian_pines': use --cube indian_pines, "
                                        r"or \$\(geolesf data path indian_pines --file IP_200_M\.mat\)"):
        resolve_source("IP_200_M.mat", "cube")
    with pytest.raises(DataError, match=r"use --labels indian_pines \(data\.labels: indian_pines in a config\)"):
        resolve_data(DataConfig(cube="indian_pines", labels="data/Indian_pines_gt.mat:indian_pines_gt"))


def test_role_missing_and_file_not_local(elsewhere):
    with pytest.raises(DataError, match="dataset 'indian_pines_dase' has no cube or image file"):
        resolve_source("indian_pines_dase", "cube")
    with pytest.raises(DataError, match=r"pavia_university: file 'PaviaU\.mat' not found .*geolesf data fetch"):
        resolve_source("pavia_university", "cube")


def test_resolve_data_returns_a_copy(elsewhere):
    data = DataConfig(cube="indian_pines", labels="indian_pines", split="dase", train_map="indian_pines_dase")
    out = resolve_data(data)
    assert out.cube.endswith("IP_200_M.mat:data_M") and out.train_map.endswith("indianpines_ts.tif")
    assert data.cube == "indian_pines" and out.split == "dase"


def test_dataset_file_paths(elsewhere):
    assert [p.name for p in dataset_file_paths("indian_pines")] == ["IP_200_M.mat", "Indian_pines_gt.mat"]
    assert [p.name for p in dataset_file_paths("indian_pines", role="cube")] == ["IP_200_M.mat"]
    assert dataset_file_paths("indian_pines_dase", file="indianpines_ts.tif")[0].is_file()
    with pytest.raises(DataError, match="no file with role 'dsm'"):
        dataset_file_paths("indian_pines", role="dsm")
    with pytest.raises(DataError, match="not found .*geolesf data fetch indian_pines --file Indian_pines_corrected"):
        dataset_file_paths("indian_pines", file="Indian_pines_corrected.mat")
