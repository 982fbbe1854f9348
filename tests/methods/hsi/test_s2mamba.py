"""S²Mamba model tests (methods.md §2.12 tests 2–6 and the official-checkpoint converter)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from geolesf.errors import ModelError
from geolesf.methods.hsi import s2mamba as s2m
from geolesf.ops.selective_scan import selective_scan_reference
from geolesf.registry import create_model

OFFICIAL_KEYS = {
    "patch_embed.proj.0.weight", "patch_embed.proj.0.bias",
    "layers.0.blocks.0.ln.weight", "layers.0.blocks.0.ln.bias",
    *(f"layers.0.blocks.0.PCS.{k}" for k in (
        "in_proj.weight", "conv2d.weight", "conv2d.bias", "x_proj_weight", "dt_projs_weight", "dt_projs_bias",
        "A_logs", "Ds", "out_norm.weight", "out_norm.bias", "out_proj.weight")),
    *(f"layers.0.blocks.0.BSS.{k}" for k in (
        "in_proj.weight", "conv2d.weight", "conv2d.bias", "x_proj_weight_spectral", "dt_projs_weight_spectral",
        "dt_projs_bias_spectral", "A_logs_spectral", "Ds_spectral", "out_norm_spectral.weight",
        "out_norm_spectral.bias", "out_proj.weight")),
    *(f"layers.0.fusion.FFN_softmax.net.{i}.{p}" for i in (0, 1, 3) for p in ("weight", "bias")),
    "norm.weight", "norm.bias", "head.weight", "head.bias",
}


def small(**kw):
    args = dict(in_chans=12, num_classes=4, patch_size=5, scan_backend="cpu")
    args.update(kw)
    return create_model("s2mamba", **args)


# --- test 5: shapes, parameter count, keys, initialisation ---------------------------------


def test_indian_pines_shapes_and_parameter_count():
    model = create_model("s2mamba", in_chans=200, num_classes=16, patch_size=7)
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - 118_600) / 118_600 < 0.01, n
    assert n == 118_632  # embed 12 864, PCS 55 808, BSS 31 638, gate 17 026, norms/head 1 296
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(3, 200, 7, 7))
    assert out.shape == (3, 16)
    assert torch.isfinite(out).all()
    assert set(model.state_dict()) == OFFICIAL_KEYS
    assert model.hparams["in_chans"] == 200 and model.hparams["patch_size"] == 7
    rebuilt = s2m.S2Mamba(**model.hparams)
    rebuilt.load_state_dict(model.state_dict())


def test_initialisation():
    torch.manual_seed(0)
    model = create_model("s2mamba", in_chans=200, num_classes=16)
    sd = model.state_dict()
    a_logs = sd["layers.0.blocks.0.PCS.A_logs"]
    torch.testing.assert_close(-torch.exp(a_logs), -torch.arange(1, 17.0).expand(512, 16))
    assert torch.all(sd["layers.0.blocks.0.BSS.Ds_spectral"] == 1)
    dt0 = F.softplus(sd["layers.0.blocks.0.PCS.dt_projs_bias"])
    assert dt0.min() >= 1e-4 - 1e-7 and dt0.max() <= 0.1 + 1e-6
    assert sd["layers.0.blocks.0.PCS.dt_projs_weight"].abs().max() <= 0.5 + 1e-6  # U(±rank^-1/2), rank 4
    head = sd["head.weight"]
    assert 0.01 < head.std() < 0.03  # trunc_normal(std 0.02), cut at ±2 absolute as timm does
    assert torch.all(sd["head.bias"] == 0)


def test_bad_input_shape_is_a_model_error():
    with pytest.raises(ModelError):
        small()(torch.randn(2, 12, 7, 7))


# --- test 2: cross-scan invertibility ---------------------------------------------------------


@pytest.mark.parametrize("p", [5, 7])
def test_cross_scan_then_merge_is_four_times_identity(p):
    x = torch.randn(2, 6, p, p)
    xs = s2m.PCS.cross_scan(x)
    assert xs.shape == (2, 4, 6, p * p)
    torch.testing.assert_close(xs[:, 0], x.reshape(2, 6, -1))
    torch.testing.assert_close(xs[:, 1], x.transpose(2, 3).reshape(2, 6, -1))
    merged = s2m.PCS.cross_merge(xs, p, p)  # identity "scan"
    assert torch.equal(merged, 4 * x.reshape(2, 6, -1))


# --- test 3: BSS direction flag -----------------------------------------------------------------


def _capture_scan(monkeypatch):
    calls = []

    def spy(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False, backend="auto"):
        y = selective_scan_reference(u.double(), delta.double(), A.double(), B.double(), C.double(),
                                     D.double(), delta_bias.double(), delta_softplus).float()
        calls.append(dict(u=u, delta=delta, A=A, B=B, C=C, D=D, bias=delta_bias, y=y))
        return y

    monkeypatch.setattr(s2m, "selective_scan", spy)
    return calls


def _tie_backward_to_forward(bss):
    with torch.no_grad():
        p2 = bss.d_spectral
        for name in ("x_proj_weight_spectral", "dt_projs_weight_spectral", "dt_projs_bias_spectral"):
            getattr(bss, name)[1].copy_(getattr(bss, name)[0])
        for name in ("A_logs_spectral", "Ds_spectral"):
            getattr(bss, name)[p2:].copy_(getattr(bss, name)[:p2])


def test_bss_official_backward_is_not_reversed(monkeypatch):
    torch.manual_seed(0)
    bss = s2m.BSS(5, 16, 4, dropout=0.0, true_reverse=False).eval()
    with torch.no_grad():
        bss.A_logs_spectral.uniform_(-1, 1)
    _tie_backward_to_forward(bss)
    calls = _capture_scan(monkeypatch)
    u = torch.randn(3, 5, 5, 16)
    out = bss(u)
    (c,) = calls
    b, L = 3, bss.d_inner
    y = c["y"].view(b, 2, 25, L)
    torch.testing.assert_close(y[:, 1], y[:, 0])  # same input order and same parameters
    y_fwd = y[:, 0]
    merged = y_fwd + y_fwd.flip(-1)  # y = y_fwd + flip(y_fwd)
    x, z = bss.front(u)
    expect = bss.out_norm_spectral(merged.transpose(1, 2)).transpose(1, 2).reshape(b, 5, 5, L) * F.gelu(z)
    torch.testing.assert_close(out, bss.out_proj(expect), atol=1e-5, rtol=1e-5)


def test_bss_true_reverse_scans_backwards(monkeypatch):
    torch.manual_seed(0)
    bss = s2m.BSS(5, 16, 4, dropout=0.0, true_reverse=True).eval()
    calls = _capture_scan(monkeypatch)
    bss(torch.randn(2, 5, 5, 16))
    (c,) = calls
    L = bss.d_inner
    xs = c["u"].view(2, 2, 25, L)
    torch.testing.assert_close(xs[:, 1], xs[:, 0].flip(-1))  # the backward copy is reversed

    # causality of the backward scan in feature order: an impulse at feature 0 reaches only
    # output feature 0 of the backward direction (it is the last step of the reversed scan),
    # an impulse at the last feature reaches every output feature.
    def backward_direction(seq):
        args = {k: c[k] for k in ("delta", "B", "C")}
        u = torch.stack([seq, seq.flip(-1)], 1).reshape(2, 50, L)
        y = selective_scan_reference(u, args["delta"], c["A"], args["B"], c["C"], c["D"], c["bias"], True)
        return y.view(2, 2, 25, L)[:, 1].flip(-1)

    seq = xs[:, 0].clone()
    base = backward_direction(seq)
    for feature, expect_all in ((0, False), (L - 1, True)):
        bumped = seq.clone()
        bumped[..., feature] += 1.0
        changed = (backward_direction(bumped) - base).abs().amax(dim=(0, 1)) > 0
        if expect_all:
            assert changed.all()
        else:
            assert changed[0] and not changed[1:].any()


# --- test 4: gate --------------------------------------------------------------------------------


def test_gate_threshold_without_renormalisation():
    torch.manual_seed(0)
    gate = s2m.SpatialSpectralGate(8)
    with torch.no_grad():
        gate.FFN_softmax.net[3].weight.normal_(0, 2.0)
    s, t = torch.randn(64, 3, 3, 8), torch.randn(64, 3, 3, 8)
    g = gate.weights(s, t)
    raw = torch.softmax(gate.FFN_softmax.net(torch.cat([s, t], -1)), -1)
    assert ((g >= 0) & (g <= 1)).all()
    low = raw < 0.1
    assert low.any() and (~low).all(-1).any()  # both cases occur
    assert torch.all(g[low] == 0)
    torch.testing.assert_close(g[~low], raw[~low])
    both = (~low).all(-1)
    torch.testing.assert_close(g[both].sum(-1), torch.ones(int(both.sum())))
    one = low.any(-1)
    assert torch.all(g[one].sum(-1) < 1) and torch.all(g[one].sum(-1) >= 0.9)
    fused = gate(s, t)
    torch.testing.assert_close(fused, g[..., :1] * s + g[..., 1:] * t)


# --- test 6: overfit sanity ----------------------------------------------------------------------


def test_overfits_32_random_patches():
    torch.manual_seed(0)
    model = small(in_chans=12, num_classes=4, patch_size=5)
    x = torch.randn(32, 12, 5, 5)
    y = torch.randint(0, 4, (32,))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=5e-3)
    for step in range(300):
        model.train()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if step % 10 == 9:
            model.eval()
            with torch.no_grad():
                if (model(x).argmax(1) == y).all():
                    break
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc == 1.0, (step, acc)


# --- converter -----------------------------------------------------------------------------------


def test_converter_strips_prefix_and_loads(tmp_path):
    src = small()
    official = {f"module.{k}": v.clone() for k, v in src.state_dict().items()}
    path = tmp_path / "official_state.pt"
    torch.save(official, path)
    dst = small()
    sd = s2m.convert_official_checkpoint(torch.load(path, weights_only=True), dst)
    dst.load_state_dict(sd)
    x = torch.randn(2, 12, 5, 5)
    src.eval(), dst.eval()
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x))
    # a pickled whole model (the official torch.save(model, ...) format)
    whole = tmp_path / "official_model.pt"
    torch.save(src, whole)
    model = s2m.s2mamba_from_official(whole, scan_backend="cpu").eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x))


def test_converter_rejects_wrong_shapes_and_keys():
    model = small()
    sd = dict(model.state_dict())
    bad = dict(sd)
    bad["layers.0.blocks.0.PCS.in_proj.weight"] = torch.zeros(10, 10)
    with pytest.raises(ModelError, match="in_proj"):
        s2m.convert_official_checkpoint(bad, model)
    missing = dict(sd)
    del missing["layers.0.fusion.FFN_softmax.net.3.bias"]
    with pytest.raises(ModelError, match="missing"):
        s2m.convert_official_checkpoint(missing, model)
    with pytest.raises(ModelError):
        s2m.convert_official_checkpoint("/nonexistent/official.pt", model)
