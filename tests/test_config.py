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
