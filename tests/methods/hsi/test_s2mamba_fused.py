"""S²Mamba's copy-free CPU forward (``s2mamba_fused.py``) against the composed forward it replaces:
outputs in eval mode, gradients in training, and the embedded Indian Pines checkpoint's classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import geolesf.methods.hsi.s2mamba as s2m
from geolesf.ops.selective_scan import native_kernel_available

needs_native = pytest.mark.skipif(not native_kernel_available(), reason="no C compiler for the native kernel")
ROOT = Path(__file__).resolve().parents[3]


def _both(monkeypatch, fn):
    """fn() on the fused path, then on the composed path."""
    fused = fn()
    monkeypatch.setattr(s2m, "use_fused", lambda *_: False)
    composed = fn()
    monkeypatch.undo()
    return fused, composed


@needs_native
@pytest.mark.parametrize("patch,true_reverse", [(7, False), (5, True), (3, False)])
def test_eval_outputs_match_composed_forward(monkeypatch, patch, true_reverse):
    torch.manual_seed(0)
    model = s2m.S2Mamba(12, 5, patch, dims=24, bss_true_reverse=true_reverse, scan_backend="cpu").eval()
    x = torch.randn(9, 12, patch, patch)

    def run():
        with torch.inference_mode():
            return model(x)

    fused, composed = _both(monkeypatch, run)
    assert s2m.use_fused(model.layers[0].blocks[0].PCS, torch.zeros(1, patch, patch, 24))
    torch.testing.assert_close(fused, composed, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused.softmax(1), composed.softmax(1), atol=1e-6, rtol=0)


@needs_native
@pytest.mark.parametrize("true_reverse", [False, True])
def test_training_gradients_match_composed_forward(monkeypatch, true_reverse):
    torch.manual_seed(1)
    model = s2m.S2Mamba(10, 4, 5, dims=16, dropout=0.0, bss_true_reverse=true_reverse, scan_backend="cpu").train()
    x = torch.randn(6, 10, 5, 5)
    target = torch.tensor([0, 1, 2, 3, 0, 1])

    def run():
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), target)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    (lf, gf), (lc, gc) = _both(monkeypatch, run)
    torch.testing.assert_close(lf, lc, atol=1e-6, rtol=1e-6)
    assert set(gf) == set(gc)
    for name in gc:
        scale = gc[name].abs().max().item()
        err = (gf[name] - gc[name]).abs().max().item()
        assert err <= 1e-4 * max(scale, 1e-3), (name, err, scale)


def test_other_backends_keep_the_composed_forward():
    pcs = s2m.PCS(8, 4, scan_backend="reference")
    assert not s2m.use_fused(pcs, torch.zeros(1, 3, 3, 8))
    pcs.scan_backend = "cpu"
    assert s2m.use_fused(pcs, torch.zeros(1, 3, 3, 8)) == native_kernel_available()
    assert not s2m.use_fused(pcs, torch.zeros(1, 3, 3, 8, dtype=torch.float16))


@needs_native
def test_embedded_checkpoint_classes_unchanged_on_indian_pines(monkeypatch):
    """The shipped checkpoint on 1,500 real Indian Pines pixels: identical classes, probabilities
    within 1e-5 (the whole scene is compared by benchmarks/bench_s2mamba.py)."""
    from geolesf.io.hsi import read_cube
    from geolesf.methods.hsi.checkpoint import load_any
    from geolesf.predict.patches import PatchGatherer

    ckpt = load_any("s2mamba:indian_pines_dase")
    cube = read_cube(ROOT / "geolesf/embedded/indian_pines/IP_200_M.mat").data
    x = ckpt.normalise(ckpt.select_bands(cube, 2, "indian pines"))
    gather = PatchGatherer(x, ckpt.patch_size, ckpt.padding)
    idx = torch.from_numpy(np.random.default_rng(0).choice(x.shape[0] * x.shape[1], 1500, replace=False))
    patches = gather(idx // x.shape[1], idx % x.shape[1])
    model = ckpt.model.eval()

    def run():
        with torch.inference_mode():
            return model(patches).softmax(1)

    fused, composed = _both(monkeypatch, run)
    assert torch.equal(fused.argmax(1), composed.argmax(1))
    assert (fused - composed).abs().max().item() <= 1e-5
