from __future__ import annotations

import hashlib

import pytest
import torch

from geolesf.errors import ChecksumError, ModelError
from geolesf.registry import (
    PretrainedCfg,
    create_model,
    list_models,
    load_pretrained,
    register_model,
)


@register_model(
    "test-linear",
    method="hsi", kind="test",
    pretrained=[PretrainedCfg(tag="t", file="test-linear.pt", sha256="0" * 64, bands=3, licence="CC0")],
)
def _test_linear(in_features: int = 3, out_features: int = 2) -> torch.nn.Module:
    """A linear layer used by the registry tests."""
    return torch.nn.Linear(in_features, out_features)


def test_create_and_list():
    model = create_model("test-linear", in_features=4)
    assert isinstance(model, torch.nn.Linear) and model.in_features == 4
    assert "test-linear" in list_models("test-*")
    assert list_models("no-such-*") == []
    assert {"s2mamba", "rf", "svm"} <= set(list_models())


def test_unknown_model_suggests():
    with pytest.raises(ModelError, match=r"unknown model 's2mamb'; did you mean 's2mamba'\?"):
        create_model("s2mamb")


def test_bad_arguments():
    with pytest.raises(ModelError, match="bad arguments"):
        create_model("test-linear", nonsense=1)


def test_pretrained_checksum_refusal(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(create_model("test-linear").state_dict(), path)
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        load_pretrained("test-linear", "t", path=path)


def test_pretrained_loads_when_checksum_matches(tmp_path, monkeypatch):
    from geolesf import registry

    path = tmp_path / "w.pt"
    state = create_model("test-linear").state_dict()
    torch.save(state, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    entry = registry.get_entry("test-linear")
    monkeypatch.setitem(entry.pretrained, "t", PretrainedCfg(tag="t", file="w.pt", sha256=digest))
    loaded = load_pretrained("test-linear", "t", path=path)
    assert torch.equal(loaded["weight"], state["weight"])


def test_missing_weights_file():
    with pytest.raises(ModelError, match="not found"):
        load_pretrained("test-linear", "t")


def test_resolve_checkpoint_by_registered_tag(monkeypatch, _isolated_home):
    from geolesf import registry

    weights = _isolated_home / "weights"
    weights.mkdir()
    path = weights / "ok.pt"
    torch.save({"format": "x"}, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    entry = registry.get_entry("test-linear")
    monkeypatch.setitem(entry.pretrained, "ok", PretrainedCfg(tag="ok", file="ok.pt", sha256=digest))
    assert registry.resolve_checkpoint("test-linear:ok") == path
    payload, sha, where = registry.read_checkpoint("test-linear:ok")
    assert payload == {"format": "x"} and sha == digest and where == path
    path.write_bytes(path.read_bytes() + b"tampered")
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        registry.resolve_checkpoint("test-linear:ok")
    with pytest.raises(ModelError, match="has no pretrained checkpoint 'nope'"):
        registry.resolve_checkpoint("test-linear:nope")
    with pytest.raises(ModelError, match="checkpoint not found"):
        registry.resolve_checkpoint("missing.pt")


def test_shipped_s2mamba_checkpoint_verifies_and_loads():
    from geolesf.methods.hsi.checkpoint import load as load_patch_checkpoint
    from geolesf.registry import get_entry

    entry = get_entry("s2mamba")
    assert entry.pretrained, "s2mamba has no shipped checkpoint registered"
    for tag, cfg in entry.pretrained.items():
        ckpt = load_patch_checkpoint(f"s2mamba:{tag}")
        assert ckpt.sha256 == cfg.sha256
        assert ckpt.in_bands == cfg.bands
        assert tuple(ckpt.class_names) == cfg.class_names
        assert "config" in ckpt.extra


def test_builtin_table_matches_the_decorators_and_stays_lazy():
    import subprocess
    import sys

    from geolesf.registry import _REGISTRY, BUILTIN_MODELS, list_models

    names = list_models()
    assert set(BUILTIN_MODELS) <= set(names)
    for name, module in BUILTIN_MODELS.items():
        assert _REGISTRY[name].fn.__module__ == module, name
    # building an S²Mamba imports neither SAM nor CLIP nor the detector
    code = ("import sys; from geolesf.registry import create_model\n"
            "create_model('s2mamba', in_chans=8, num_classes=3, patch_size=5)\n"
            "heavy = [m for m in ('segment_anything', 'open_clip', 'geolesf.methods.wsod', 'geolesf.methods.wsss.cam') "
            "if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True)
