"""Reused batch buffers, channels-last input and the pinned mmap threshold of the dense tile runner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from geolesf.errors import ConfigError
from geolesf.predict.batching import use_channels_last
from geolesf.predict.model import as_predict_model
from geolesf.predict.rowloop import TileRunner
from geolesf.predict.tiled import predict_raster

from .conftest import TinyConv


def _tiles(n: int, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(3, h, w)).astype(np.float32) for _ in range(n)]


def _plain_forward(model: nn.Module, tiles: list[np.ndarray], ph: int, pw: int, th: int, tw: int) -> np.ndarray:
    """The dense forward as it was before the reused buffers: np.stack of symmetric-padded NCHW tiles."""
    padded = [np.pad(a, ((0, 0), (0, ph - a.shape[1]), (0, pw - a.shape[2])), mode="symmetric") for a in tiles]
    with torch.inference_mode():
        return model(torch.from_numpy(np.stack(padded))).softmax(1)[:, :, :th, :tw].numpy()


def _runner(model: nn.Module, th: int, tw: int, memory_format: str, divisor: int = 1) -> TileRunner:
    model.size_divisor = divisor
    pm = as_predict_model(model, class_names=["a", "b", "c", "d"])
    return TileRunner(pm, None, th, tw, "cpu", True, 64, memory_format)


@pytest.mark.parametrize("divisor", [1, 8])
def test_contiguous_is_the_plain_forward_bit_for_bit(divisor):
    """``contiguous``: the bytes of the plain NCHW forward, also when tiles are padded to a size divisor."""
    model = TinyConv(scale=0.5).eval()
    th, tw = 37, 45
    runner = _runner(model, th, tw, "contiguous", divisor)
    assert not runner.channels_last
    tiles = _tiles(3, th, tw)
    got = runner.run_dense(tiles)
    want = _plain_forward(model, tiles, runner.ph, runner.pw, th, tw)
    assert got.dtype == np.float32 and got.shape == (3, 4, th, tw)
    np.testing.assert_array_equal(got, want)
    if divisor > 1:
        assert (runner.ph, runner.pw) == (40, 48)


def test_channels_last_equals_nchw_to_rounding_and_buffers_are_reused():
    model = TinyConv(scale=0.5).eval()
    runner = _runner(model, 40, 40, "auto")
    assert runner.channels_last
    first = runner.run_dense(_tiles(4, 40, 40, seed=1))
    buf_in, buf_out = runner.buffers._in, runner.buffers._out
    assert buf_in.shape == (4, 40, 40, 3)  # NHWC input buffer
    tiles = _tiles(4, 40, 40, seed=2)
    second = runner.run_dense(tiles)
    # the same memory is reused: no per-batch allocation, and returned arrays are views of it
    assert runner.buffers._in is buf_in and runner.buffers._out is buf_out
    assert np.shares_memory(first, second)
    np.testing.assert_allclose(second, _plain_forward(model, tiles, 40, 40, 40, 40), atol=1e-5)
    # a smaller (last) batch reuses the buffers too
    third = runner.run_dense(tiles[:1])
    assert third.shape == (1, 4, 40, 40) and runner.buffers._in is buf_in


def test_auto_layout_choice():
    conv = TinyConv().eval()
    assert use_channels_last(conv, "cpu", "auto")
    assert not use_channels_last(conv, "cuda", "auto")  # only measured on CPU
    assert not use_channels_last(nn.Linear(3, 4), "cpu", "auto")  # no convolution
    assert not use_channels_last(lambda x: x, "cpu", "auto")  # any other callable (e.g. ONNX Runtime)
    assert use_channels_last(lambda x: x, "cpu", "channels_last")
    assert not use_channels_last(conv, "cpu", "contiguous")


def test_non_module_callable_still_runs():
    """A PredictModel whose module is a plain callable returning a tensor (e.g. an ONNX Runtime engine)."""
    model = TinyConv(scale=0.5).eval()
    pm = as_predict_model(model, class_names=["a", "b", "c", "d"])

    def engine(x: torch.Tensor) -> torch.Tensor:
        assert x.is_contiguous()  # NCHW for anything that is not an nn.Module
        return model(x)

    pm.module = engine
    runner = TileRunner(pm, None, 32, 32, "cpu", True, 64, "auto")
    tiles = _tiles(2, 32, 32)
    np.testing.assert_array_equal(runner.run_dense(tiles), _plain_forward(model, tiles, 32, 32, 32, 32))


def test_predict_raster_auto_vs_contiguous(rgb_crop, tmp_path):
    model = TinyConv(scale=1 / 64).eval()
    maps, probs = {}, {}
    for fmt in ("auto", "contiguous"):
        out, p = tmp_path / f"{fmt}.tif", tmp_path / f"{fmt}_p.tif"
        predict_raster(rgb_crop, model, out, tile=96, overlap=32, batch_size=3, probabilities=p,
                       class_names=list("abcd"), progress=False, memory_format=fmt, qml=False)
        with rasterio.open(out) as o, rasterio.open(p) as q:
            maps[fmt], probs[fmt] = o.read(1), q.read()
            assert o.tags()["tile"] == "96"
    np.testing.assert_allclose(probs["auto"], probs["contiguous"], atol=1e-5)
    assert (maps["auto"] == maps["contiguous"]).mean() > 0.999


def test_bad_memory_format_is_refused_before_any_work(rgb_crop, tmp_path):
    with pytest.raises(ConfigError, match="memory_format must be one of auto, channels_last, contiguous"):
        predict_raster(rgb_crop, TinyConv().eval(), tmp_path / "m.tif", class_names=list("abcd"),
                       memory_format="nhwc", progress=False)
    assert list(tmp_path.iterdir()) == []


_RSS = r"""
import numpy as np
from geolesf.predict.batching import pin_mmap_threshold

def rss():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith("VmRSS")) * 1024
"""

_PROBE = _RSS + r"""
pinned = pin_mmap_threshold()
a = np.ones(24 << 20, np.uint8); del a      # freed mmap: glibc would raise its threshold to 24 MiB
base = rss()
b = np.ones(12 << 20, np.uint8); del b      # 12 MiB: heap (dynamic threshold) or its own mapping (pinned)
print(pinned, (rss() - base) >> 20)
"""


def _run_probe(code: str, cwd: Path, threshold: str | None = None) -> list[str]:
    """Run a heap probe in a fresh interpreter; ``GEOLESF_MMAP_THRESHOLD`` set to ``threshold`` (None:
    unset). glibc's MALLOC_* variables (dask's nanny puts MALLOC_TRIM_THRESHOLD_ in os.environ) switch
    its dynamic threshold off, so the probe runs without them."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "GEOLESF_MMAP_THRESHOLD" and not k.startswith("MALLOC_")}
    if threshold is not None:
        env["GEOLESF_MMAP_THRESHOLD"] = threshold
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=cwd, env=env)
    return proc.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.parametrize("env", ["", "0"])
def test_pinned_mmap_threshold_returns_freed_batches(env, tmp_path):
    """Pinned: a freed 12 MiB block goes back to the OS. Off (``GEOLESF_MMAP_THRESHOLD=0``): glibc's
    dynamic threshold keeps it in the heap, resident — the creep the pinning removes."""
    pinned, kept_mb = _run_probe(_PROBE, tmp_path, env)
    if env == "0":
        assert pinned == "False" and int(kept_mb) >= 11
    else:
        assert pinned == "True" and int(kept_mb) <= 1


_PIXEL_PROBE = _RSS + r"""
first = pin_mmap_threshold()                   # dense: 4 MiB
pinned = pin_mmap_threshold(kind="pixel")      # the latest call's setting: 256 MiB
a = np.ones(64 << 20, np.uint8); del a         # a patch batch's activations, freed
base = rss()                                   # still resident: kept in the heap for the next batch
b = np.ones(64 << 20, np.uint8)                # the next batch: the same memory, no new pages
print(first, pinned, base >> 20, (rss() - base) >> 20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_pixel_models_keep_batch_memory_in_the_heap(tmp_path):
    """kind="pixel": a freed 64 MiB block stays in the heap and the next one of that size reuses it
    (no fresh pages to fault in); a later call switches the setting of an earlier one."""
    first, pinned, base_mb, grown_mb = _run_probe(_PIXEL_PROBE, tmp_path)
    assert first == "True" and pinned == "True"
    assert int(base_mb) >= 64 and int(grown_mb) <= 1
