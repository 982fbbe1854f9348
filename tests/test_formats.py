"""The format registry: every checkpoint format routes to a method package that implements the protocol."""

from __future__ import annotations

import importlib

import pytest

from geolesf import formats
from geolesf.errors import ConfigError, ModelError


@pytest.mark.parametrize("fmt", sorted(formats.FORMATS))
def test_each_format_routes_to_a_method_implementing_the_protocol(fmt):
    method = formats.FORMATS[fmt]
    ckpt = formats.method_module(method, "checkpoint")
    assert fmt in getattr(ckpt, "FORMATS", (ckpt.FORMAT,))
    assert callable(ckpt.save) and callable(ckpt.load)
    inference = formats.inference(fmt, "x.pt")
    assert callable(getattr(inference, "predict_model", None)) or callable(getattr(inference, "run", None))
    assert callable(formats.evaluator(fmt, "x.pt").evaluate)


@pytest.mark.parametrize("task", sorted(formats.TASKS))
def test_each_task_has_a_train_module(task):
    module = formats.task_module(task)
    assert module.__name__ == f"geolesf.methods.{formats.TASKS[task]}.train"
    assert callable(module.run_config) and hasattr(module, "CONFIG")
    assert module.CONFIG().task == task


def test_formats_are_unique_and_methods_complete():
    ckpts = [f for m in formats.METHODS
             for f in getattr(importlib.import_module(f"geolesf.methods.{m}.checkpoint"), "FORMATS",
                              (importlib.import_module(f"geolesf.methods.{m}.checkpoint").FORMAT,))]
    assert sorted(ckpts) == sorted(formats.FORMATS)
    assert set(formats.TASKS.values()) == set(formats.METHODS)


def test_unknown_format_and_task_are_one_line_errors():
    with pytest.raises(ModelError, match=r"x\.pt: not a checkpoint geolesf can use \(format 'nope/1'"):
        formats.inference("nope/1", "x.pt")
    with pytest.raises(ConfigError, match="unknown task 'segmentaton'; did you mean 'segmentation'"):
        formats.task_module("segmentaton")


def test_shipped_checkpoint_format_is_read_without_loading_it():
    assert formats.checkpoint_format("s2mamba:indian_pines_dase") == "geolesf-hsi-patch/1"


def test_request_types_carry_only_what_the_user_gave():
    req = formats.PredictRequest(scene="a.tif", checkpoint="m.pt", out="o.tif", tile=256)
    assert req.tiling() == {"tile": 256}
    ev = formats.EvaluateRequest(checkpoint="m.pt", dataset="voc2012", options={"limit": 2})
    assert ev.benchmark_args() == {"dataset": "voc2012", "data_root": None, "what": None, "out": None,
                                   "device": "cpu", "batch_size": None, "options": {"limit": 2}}
