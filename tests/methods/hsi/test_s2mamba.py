"""S²Mamba model tests (methods.md §2.12 tests 2–6 and the official-checkpoint converter)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from geolesf.errors import ModelError
from geolesf.methods.hsi import s2mamba as s2m
from geolesf.ops.selective_scan import selective_scan_reference
from geolesf.registry import create_model

from tests.methods.hsi import s2mamba_spec as spec

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
    # Distributions, not ranges: Kolmogorov–Smirnov against the specified law (seeded, so deterministic;
    # a wrong scale, e.g. dt_max 1.0, U(±1) or std 0.05, gives p-values far below 1e-3).
    for branch, name in (("PCS", "dt_projs"), ("BSS", "dt_projs")):
        suffix = "_spectral" if branch == "BSS" else ""
        dt0 = F.softplus(sd[f"layers.0.blocks.0.{branch}.{name}_bias{suffix}"].double())
        assert dt0.min() >= 1e-3 * (1 - 1e-5) and dt0.max() <= 0.1 * (1 + 1e-5)
        lo, hi = math.log(1e-3), math.log(1e-1)  # dt₀ log-uniform on [1e-3, 1e-1]
        assert stats.kstest(dt0.log().flatten().numpy(), stats.uniform(lo, hi - lo).cdf).pvalue > 1e-3
        w = sd[f"layers.0.blocks.0.{branch}.{name}_weight{suffix}"]
        assert w.abs().max() <= 0.5  # U(±rank^-1/2), rank 4
        assert stats.kstest(w.flatten().numpy(), stats.uniform(-0.5, 1.0).cdf).pvalue > 1e-3
    for key in ("head.weight", "layers.0.fusion.FFN_softmax.net.1.weight", "layers.0.blocks.0.PCS.in_proj.weight"):
        w = sd[key].flatten().numpy()  # trunc_normal(std 0.02); the ±2 cut never binds at this std
        assert stats.kstest(w, stats.norm(0, 0.02).cdf).pvalue > 1e-3, key
    for key in ("head.bias", "layers.0.fusion.FFN_softmax.net.1.bias", "layers.0.fusion.FFN_softmax.net.3.bias"):
        assert torch.all(sd[key] == 0), key
    # x_proj keeps nn.Linear's default: U(±1/sqrt(fan_in)), fan_in = d_inner = 128
    w = sd["layers.0.blocks.0.PCS.x_proj_weight"].flatten().numpy()
    assert stats.kstest(w, stats.uniform(-128 ** -0.5, 2 * 128 ** -0.5).cdf).pvalue > 1e-3


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
    monkeypatch.setattr(s2m, "use_fused", lambda *_: False)  # the composed forward (the fused one: test_s2mamba_fused.py)
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


# The official checkpoint is built *in the official layout* from an independent forward's own
# parameters (tests/methods/hsi/s2mamba_spec.py, written from methods.md §2 with plain torch ops),
# with the ``module.`` prefix of a DataParallel checkpoint; geolesf loads it through its converter
# and must reproduce the independent forward. The name/layout mapping below is part of the test.

SPEC_BANDS, SPEC_CLASSES, SPEC_PATCH, SPEC_DIM, SPEC_STATE = 16, 5, 7, 8, 4


def _spec_params(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random parameters in the independent forward's layout (float32-representable float64)."""
    g = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in spec.spec_shapes(SPEC_BANDS, SPEC_CLASSES, SPEC_PATCH, SPEC_DIM, SPEC_STATE).items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "A_log":
            v = torch.empty(shape, dtype=torch.float64).uniform_(-1.0, 1.5, generator=g)
        elif leaf == "dt_bias":
            v = torch.empty(shape, dtype=torch.float64).uniform_(-3.0, 0.5, generator=g)
        elif leaf in ("D", "g"):  # skip weights and LayerNorm gains around 1
            v = 1.0 + 0.3 * torch.randn(shape, dtype=torch.float64, generator=g)
        elif name == "gate.W2":  # large enough that the 0.1 cut-off is exercised
            v = 1.5 * torch.randn(shape, dtype=torch.float64, generator=g)
        elif len(shape) == 1:  # biases, LayerNorm shifts
            v = 0.2 * torch.randn(shape, dtype=torch.float64, generator=g)
        else:
            fan_in = math.prod(shape[1:])
            v = torch.randn(shape, dtype=torch.float64, generator=g) / math.sqrt(fan_in)
        params[name] = v.float().double()  # both models then hold exactly the same numbers
    return params


def _official_state_dict(p: dict[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """The independent parameters under the official ``PURE-melo/S2Mamba`` names and layouts."""

    def branch(br: str, k_dirs: int, suffix: str, norm: str) -> dict[str, torch.Tensor]:
        dirs = [f"{br}.dir{k}" for k in range(k_dirs)]
        return {
            "in_proj.weight": torch.cat([p[f"{br}.W_x"], p[f"{br}.W_z"]], 0),  # chunk(2): x first, then z
            "conv2d.weight": p[f"{br}.conv.k"][:, None],  # depthwise: (C, 1, 3, 3)
            "conv2d.bias": p[f"{br}.conv.b"],
            f"x_proj_weight{suffix}": torch.stack(
                [torch.cat([p[f"{d}.W_dt_low"], p[f"{d}.W_B"], p[f"{d}.W_C"]], 0) for d in dirs]),
            f"dt_projs_weight{suffix}": torch.stack([p[f"{d}.W_dt"] for d in dirs]),
            f"dt_projs_bias{suffix}": torch.stack([p[f"{d}.dt_bias"] for d in dirs]),
            f"A_logs{suffix}": torch.cat([p[f"{d}.A_log"] for d in dirs]),  # (K·C, N), direction-major
            f"Ds{suffix}": torch.cat([p[f"{d}.D"] for d in dirs]),
            f"{norm}.weight": p[f"{br}.out_ln.g"], f"{norm}.bias": p[f"{br}.out_ln.b"],
            "out_proj.weight": p[f"{br}.W_out"],
        }

    sd = {
        "patch_embed.proj.0.weight": p["embed.W"][:, :, None, None], "patch_embed.proj.0.bias": p["embed.b"],
        "layers.0.blocks.0.ln.weight": p["ln.g"], "layers.0.blocks.0.ln.bias": p["ln.b"],
        **{f"layers.0.blocks.0.PCS.{k}": v for k, v in branch("pcs", 4, "", "out_norm").items()},
        **{f"layers.0.blocks.0.BSS.{k}": v for k, v in branch("bss", 2, "_spectral", "out_norm_spectral").items()},
        "layers.0.fusion.FFN_softmax.net.0.weight": p["gate.ln.g"], "layers.0.fusion.FFN_softmax.net.0.bias": p["gate.ln.b"],
        "layers.0.fusion.FFN_softmax.net.1.weight": p["gate.W1"], "layers.0.fusion.FFN_softmax.net.1.bias": p["gate.b1"],
        "layers.0.fusion.FFN_softmax.net.3.weight": p["gate.W2"], "layers.0.fusion.FFN_softmax.net.3.bias": p["gate.b2"],
        "norm.weight": p["head.ln.g"], "norm.bias": p["head.ln.b"],
        "head.weight": p["head.W"], "head.bias": p["head.b"],
    }
    return {prefix + k: v.float().clone() for k, v in sd.items()}


def _outputs(model, x):
    """Logits plus the PCS, BSS and layer outputs of a geolesf model (forward hooks)."""
    seen = {}
    blk = model.layers[0].blocks[0]
    hooks = [mod.register_forward_hook(lambda m, i, o, key=key: seen.__setitem__(key, o))
             for key, mod in (("pcs", blk.PCS), ("bss", blk.BSS), ("layer", model.layers[0]))]
    try:
        with torch.no_grad():
            seen["logits"] = model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.mark.parametrize("true_reverse", [False, True], ids=["official", "paper_reverse"])
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_official_checkpoint_matches_independent_forward(tmp_path, backend, true_reverse):
    p = _spec_params(seed=1)
    official = _official_state_dict(p)
    assert set(official) == {f"module.{k}" for k in OFFICIAL_KEYS}
    path = tmp_path / "official_dataparallel_state.pt"
    torch.save(official, path)
    model = s2m.s2mamba_from_official(path, scan_backend=backend, bss_true_reverse=true_reverse).eval()
    assert (model.hparams["in_chans"], model.hparams["num_classes"], model.hparams["patch_size"],
            model.hparams["dims"], model.hparams["d_state"]) == (SPEC_BANDS, SPEC_CLASSES, SPEC_PATCH, SPEC_DIM,
                                                                 SPEC_STATE)

    x = torch.randn(3, SPEC_BANDS, SPEC_PATCH, SPEC_PATCH, generator=torch.Generator().manual_seed(2))
    want = spec.forward(p, x.double(), true_reverse=true_reverse)
    # the gate cut-off is exercised, and no gate weight sits so close to 0.1 that rounding could flip it
    assert (want["gate"] == 0).any() and (want["gate"] > 0).all(-1).any()
    assert ((want["gate"] - spec.GATE_THRESHOLD).abs() > 1e-4).all()

    got = _outputs(model, x)
    for key in ("pcs", "bss", "layer", "logits"):
        torch.testing.assert_close(got[key].double(), want[key], atol=2e-5, rtol=1e-5, msg=lambda m, k=key: f"{k}: {m}")

    # the same checkpoint through convert_official_checkpoint into a model built by the registry
    dst = small(in_chans=SPEC_BANDS, num_classes=SPEC_CLASSES, patch_size=SPEC_PATCH, dims=SPEC_DIM,
                d_state=SPEC_STATE, scan_backend=backend, bss_true_reverse=true_reverse).eval()
    dst.load_state_dict(s2m.convert_official_checkpoint(torch.load(path, weights_only=True), dst))
    torch.testing.assert_close(_outputs(dst, x)["logits"].double(), want["logits"], atol=2e-5, rtol=1e-5)


def test_official_pickled_whole_model_loads(tmp_path):
    """The official script pickles the whole module; the converter takes its state_dict."""
    p = _spec_params(seed=3)
    # stands in for the official class (not importable here): plain nested modules holding the
    # official names, wrapped in DataParallel so that its state dict carries ``module.``
    stand_in = torch.nn.Module()
    for key, value in _official_state_dict(p, prefix="").items():
        *path, leaf = key.split(".")
        mod = stand_in
        for part in path:
            if not hasattr(mod, part):
                mod.add_module(part, torch.nn.Module())
            mod = getattr(mod, part)
        mod.register_parameter(leaf, torch.nn.Parameter(value))
    assert all(k.startswith("module.") for k in torch.nn.DataParallel(stand_in).state_dict())
    whole = tmp_path / "official_model.pt"
    torch.save(torch.nn.DataParallel(stand_in), whole)
    with pytest.raises(ModelError, match="trusted=True"):  # a whole pickled model runs code: only when trusted
        s2m.s2mamba_from_official(whole, scan_backend="cpu")
    model = s2m.s2mamba_from_official(whole, trusted=True, scan_backend="cpu").eval()
    x = torch.randn(2, SPEC_BANDS, SPEC_PATCH, SPEC_PATCH, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(_outputs(model, x)["logits"].double(), spec.forward(p, x.double())["logits"],
                               atol=2e-5, rtol=1e-5)


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
