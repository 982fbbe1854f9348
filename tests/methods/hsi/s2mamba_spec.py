"""An independent S²Mamba forward written from the equations of methods.md §2 (2.2–2.6).

Nothing here imports geolesf: the selective scan is its own per-step loop (§2.5), the PCS scan
orders are explicit lists of ``(row, col)`` positions (§2.3), BSS builds its two feature-axis
sequences itself (§2.4), and the gate is written out (§2.6). Parameters are a flat dictionary
with this module's *own* names (``SPEC_SHAPES``); the test maps them to the official state-dict
names explicitly, so a wrong mapping in geolesf's converter shows up as a mismatch.

Everything runs in float64, in eval mode (no dropout / DropPath).
"""

from __future__ import annotations

import math

import torch

LN_EPS = 1e-5  # PyTorch default; the official model passes nn.LayerNorm down (§2.2)
GATE_THRESHOLD = 0.1


def spec_shapes(bands: int, classes: int, patch: int, dim: int, d_state: int) -> dict[str, tuple[int, ...]]:
    """Parameter shapes in this module's own layout (one entry per direction where there are several)."""
    inner, r, pos = 2 * dim, math.ceil(dim / 16), patch * patch
    shapes: dict[str, tuple[int, ...]] = {
        "embed.W": (dim, bands), "embed.b": (dim,),               # 1×1 conv as a matrix
        "ln.g": (dim,), "ln.b": (dim,),
        "gate.ln.g": (2 * dim,), "gate.ln.b": (2 * dim,),
        "gate.W1": (2 * dim, 2 * dim), "gate.b1": (2 * dim,),
        "gate.W2": (2, 2 * dim), "gate.b2": (2,),
        "head.ln.g": (dim,), "head.ln.b": (dim,),
        "head.W": (classes, dim), "head.b": (classes,),
    }
    for br, channels, k_dirs in (("pcs", inner, 4), ("bss", pos, 2)):
        shapes |= {
            f"{br}.W_x": (inner, dim), f"{br}.W_z": (inner, dim),  # the two halves of in_proj
            f"{br}.conv.k": (inner, 3, 3), f"{br}.conv.b": (inner,),
            f"{br}.out_ln.g": (channels if br == "bss" else inner,),
            f"{br}.out_ln.b": (channels if br == "bss" else inner,),
            f"{br}.W_out": (dim, inner),
        }
        for k in range(k_dirs):
            shapes |= {
                f"{br}.dir{k}.W_dt_low": (r, channels), f"{br}.dir{k}.W_B": (d_state, channels),
                f"{br}.dir{k}.W_C": (d_state, channels),
                f"{br}.dir{k}.W_dt": (channels, r), f"{br}.dir{k}.dt_bias": (channels,),
                f"{br}.dir{k}.A_log": (channels, d_state), f"{br}.dir{k}.D": (channels,),
            }
    return shapes


# --- elementary functions, written out -------------------------------------------------------


def gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def silu(x):
    return x / (1.0 + torch.exp(-x))


def softplus(x):
    return torch.log1p(torch.exp(x))


def layer_norm(x, g, b):
    """Normalise over the last axis (biased variance), then scale and shift."""
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + LN_EPS) * g + b


def depthwise_conv3x3(x, k, b):
    """``x: (B, C, P, P)``; zero padding 1; ``out[c,i,j] = b[c] + Σ_{di,dj} k[c,di,dj]·x[c,i+di-1,j+dj-1]``."""
    n, c, h, w = x.shape
    padded = torch.zeros(n, c, h + 2, w + 2, dtype=x.dtype)
    padded[:, :, 1:-1, 1:-1] = x
    out = b.view(1, c, 1, 1).expand(n, c, h, w).clone()
    for di in range(3):
        for dj in range(3):
            out = out + k[:, di, dj].view(1, c, 1, 1) * padded[:, :, di:di + h, dj:dj + w]
    return out


# --- §2.5 selective scan: one step at a time --------------------------------------------------


def scan(u, dt_raw, dt_bias, A_log, Bt, Ct, D):
    """One direction. ``u, dt_raw: (B, C, L)``; ``Bt, Ct: (B, N, L)``; ``A_log: (C, N)``; returns ``(B, C, L)``.

    Δ = softplus(dt + bias); Ā = exp(Δ·A), A = −exp(A_log); h_t = Ā h_{t−1} + Δ·B_t·u_t;
    y_t = Σ_n C_t h_t + D·u_t.
    """
    n_batch, channels, steps = u.shape
    A = -torch.exp(A_log)
    h = torch.zeros(n_batch, channels, A.shape[1], dtype=u.dtype)
    ys = []
    for t in range(steps):
        delta = softplus(dt_raw[:, :, t] + dt_bias)                       # (B, C)
        a_bar = torch.exp(delta[:, :, None] * A[None])                    # (B, C, N)
        bx = delta[:, :, None] * Bt[:, None, :, t] * u[:, :, t, None]     # (B, C, N)
        h = a_bar * h + bx
        ys.append((h * Ct[:, None, :, t]).sum(-1) + D * u[:, :, t])
    return torch.stack(ys, dim=-1)


def _direction(p, prefix, seq):
    """Input-dependent Δ, B, C of one direction (§2.3 step 4), then the scan."""
    dt_low = torch.einsum("rc,bcl->brl", p[f"{prefix}.W_dt_low"], seq)
    Bt = torch.einsum("nc,bcl->bnl", p[f"{prefix}.W_B"], seq)
    Ct = torch.einsum("nc,bcl->bnl", p[f"{prefix}.W_C"], seq)
    dt = torch.einsum("cr,brl->bcl", p[f"{prefix}.W_dt"], dt_low)
    return scan(seq, dt, p[f"{prefix}.dt_bias"], p[f"{prefix}.A_log"], Bt, Ct, p[f"{prefix}.D"])


def _front(p, br, u):
    """in_proj halves, depthwise 3×3 conv + SiLU on x; returns x ``(B, inner, P, P)`` and z ``(B, P, P, inner)``."""
    x = torch.einsum("ed,bhwd->behw", p[f"{br}.W_x"], u)
    z = torch.einsum("ed,bhwd->bhwe", p[f"{br}.W_z"], u)
    return silu(depthwise_conv3x3(x, p[f"{br}.conv.k"], p[f"{br}.conv.b"])), z


def pcs_orders(patch: int) -> list[list[tuple[int, int]]]:
    """§2.3 step 3: row-major, column-major, and both reversed, as lists of (row, col)."""
    row_major = [(r, c) for r in range(patch) for c in range(patch)]
    col_major = [(r, c) for c in range(patch) for r in range(patch)]
    return [row_major, col_major, row_major[::-1], col_major[::-1]]


def pcs(p, u):
    n, patch = u.shape[0], u.shape[1]
    x, z = _front(p, "pcs", u)
    merged = torch.zeros(n, x.shape[1], patch, patch, dtype=u.dtype)
    for k, order in enumerate(pcs_orders(patch)):
        seq = torch.stack([x[:, :, r, c] for r, c in order], dim=-1)   # (B, inner, L)
        y = _direction(p, f"pcs.dir{k}", seq)
        for step, (r, c) in enumerate(order):                          # output of step l belongs to its position
            merged[:, :, r, c] += y[:, :, step]
    y = layer_norm(merged.permute(0, 2, 3, 1), p["pcs.out_ln.g"], p["pcs.out_ln.b"]) * gelu(z)
    return torch.einsum("de,bhwe->bhwd", p["pcs.W_out"], y)


def bss(p, u, true_reverse: bool = False):
    patch = u.shape[1]
    x, z = _front(p, "bss", u)
    inner = x.shape[1]
    positions = [(r, c) for r in range(patch) for c in range(patch)]
    # channels = the P² positions (row-major), sequence = the embedded features 0..inner-1
    seq = torch.stack([x[:, :, r, c] for r, c in positions], dim=1)   # (B, P², inner)
    feats = list(range(inner))
    backward_order = feats[::-1] if true_reverse else feats            # official: the flip is a no-op
    y_fwd = _direction(p, "bss.dir0", seq[:, :, feats])
    y_bwd = _direction(p, "bss.dir1", seq[:, :, backward_order])
    y = y_fwd + y_bwd[:, :, list(range(inner))[::-1]]                  # the backward output is reversed before the sum
    # LayerNorm over the positions, separately for every feature index
    y = layer_norm(y.transpose(1, 2), p["bss.out_ln.g"], p["bss.out_ln.b"])   # (B, inner, P²)
    y = torch.stack([torch.stack([y[:, :, i * patch + j] for j in range(patch)], dim=1) for i in range(patch)], dim=1)
    return torch.einsum("de,bhwe->bhwd", p["bss.W_out"], y * gelu(z))


def gate(p, s, t):
    """§2.6: per-pixel softmax over two logits; a weight below 0.1 becomes 0 (no renormalisation)."""
    h = layer_norm(torch.cat([s, t], dim=-1), p["gate.ln.g"], p["gate.ln.b"])
    h = gelu(h @ p["gate.W1"].T + p["gate.b1"])
    logits = h @ p["gate.W2"].T + p["gate.b2"]
    e = torch.exp(logits - logits.max(-1, keepdim=True).values)
    g = e / e.sum(-1, keepdim=True)
    g = torch.where(g < GATE_THRESHOLD, torch.zeros_like(g), g)
    return g, g[..., 0:1] * s + g[..., 1:2] * t


def forward(p: dict[str, torch.Tensor], x: torch.Tensor, true_reverse: bool = False) -> dict[str, torch.Tensor]:
    """``x: (B, bands, P, P)`` → logits and intermediates (``embed``, ``layer`` output, ``gate`` weights)."""
    e = gelu(torch.einsum("db,nbhw->nhwd", p["embed.W"], x) + p["embed.b"])
    u = layer_norm(e, p["ln.g"], p["ln.b"])
    s, t = pcs(p, u), bss(p, u, true_reverse)
    g, fused = gate(p, s, t)
    layer = e + fused
    tokens = layer_norm(layer.reshape(layer.shape[0], -1, layer.shape[-1]), p["head.ln.g"], p["head.ln.b"])
    logits = tokens.mean(1) @ p["head.W"].T + p["head.b"]
    return {"embed": e, "pcs": s, "bss": t, "gate": g, "layer": layer, "logits": logits}
