from __future__ import annotations

import pytest

from geolesf.config import TrainConfig, load_config, to_dict
from geolesf.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_yaml_and_overrides(tmp_path):
    path = write(tmp_path, "out: runs/a\nmodel:\n  name: rf\ndata:\n  split: random\n  train_fraction: 0.2\n")
    cfg = load_config(TrainConfig, path, ["trainer.seeds=[0,1,2]", "data.patch_size=9", "model.args={n_estimators: 10}"])
    assert cfg.out == "runs/a" and cfg.model.name == "rf"
    assert cfg.data.train_fraction == 0.2 and cfg.data.patch_size == 9
    assert cfg.trainer.seeds == [0, 1, 2]
    assert cfg.model.args == {"n_estimators": 10}
    assert to_dict(cfg)["data"]["split"] == "random"


def test_unknown_key_suggests_closest(tmp_path):
    path = write(tmp_path, "data:\n  train_fracton: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'train_fracton'; did you mean 'train_fraction'\?"):
        load_config(TrainConfig, path)


def test_unknown_override_key_suggests_closest():
    with pytest.raises(ConfigError, match=r"unknown key 'epocs'; did you mean 'epochs'"):
        load_config(TrainConfig, None, ["trainer.epocs=3"])


def test_unknown_section():
    with pytest.raises(ConfigError, match=r"unknown key 'trainr'.*'trainer'"):
        load_config(TrainConfig, None, ["trainr.epochs=3"])


def test_wrong_type_names_key(tmp_path):
    path = write(tmp_path, "trainer:\n  epochs: many\n")
    with pytest.raises(ConfigError, match=r"trainer\.epochs: expected an integer, found 'many'"):
        load_config(TrainConfig, path)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(TrainConfig, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(TrainConfig, write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(TrainConfig, write(tmp_path, "a: [1, 2\n"))


def test_override_needs_equals():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(TrainConfig, None, ["trainer.epochs"])


def test_shipped_configs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "geolesf" / "configs"
    files = sorted(root.rglob("*.yaml"))
    assert files, "geolesf/configs/ holds no YAML files"
    from geolesf.config import peek_task
    from geolesf.formats import task_module

    tasks = set()
    for path in files:
        task = peek_task(path)
        tasks.add(task)
        load_config(task_module(task).CONFIG, path)
    assert {"hsi", "segmentation", "sam-peft", "hclip", "wsss", "wsod"} <= tasks


def test_shipped_config_by_name_from_any_folder(tmp_path, monkeypatch):
    from geolesf.paths import configs_root, find_config, packaged_configs

    monkeypatch.chdir(tmp_path)
    target = configs_root() / "s2mamba" / "indian_pines.yaml"
    for text in ("s2mamba/indian_pines", "s2mamba/indian_pines.yaml", "configs/s2mamba/indian_pines.yaml",
                 "geolesf/configs/s2mamba/indian_pines.yaml"):
        assert find_config(text) == target, text
    assert "baselines/indian_pines_rf" in packaged_configs() and len(packaged_configs()) >= 19
    (tmp_path / "s2mamba").mkdir()
    (tmp_path / "s2mamba" / "indian_pines.yaml").write_text("out: mine\n")
    assert find_config("s2mamba/indian_pines.yaml").resolve() == (tmp_path / "s2mamba" / "indian_pines.yaml").resolve()
    with pytest.raises(ConfigError, match=r"config file not found .*close to it: s2mamba/indian_pines.*--list-configs"):
        load_config(TrainConfig, "s2mamba/indain_pines")


def test_shipped_hsi_configs_resolve_their_data_from_any_folder(tmp_path, monkeypatch):
    """The Indian Pines configs name catalog datasets, so they run outside the clone (shipped data only)."""
    from geolesf.data.sources import resolve_data
    from geolesf.io.hsi import read_cube, read_labels

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GEOLESF_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GEOLESF_DATA", raising=False)
    for name in ("baselines/indian_pines_rf", "baselines/indian_pines_svm", "s2mamba/indian_pines_dase",
                 "s2mamba/indian_pines_random10"):
        data = resolve_data(load_config(TrainConfig, name).data)
        assert read_cube(data.cube).shape == (145, 145, 200), name
        assert read_labels(data.labels).shape == (145, 145), name


@pytest.mark.shared_data("indian_pines_fixed_split")
def test_fixed_split_config_finds_its_maps_in_geolesf_data(shared_data, tmp_path, monkeypatch):
    from geolesf.data.sources import resolve_data

    monkeypatch.chdir(tmp_path)
    data = resolve_data(load_config(TrainConfig, "s2mamba/indian_pines").data)
    assert data.train_map == str(shared_data / "indian_pines_fixed_split" / "IndianTR123_temp123.tif")
    assert data.test_map == str(shared_data / "indian_pines_fixed_split" / "IndianTE123_temp123.tif")
