"""SAM-PARSER: fine-tune a network by training only the singular values of its weights.

Each chosen weight ``W`` (a Linear ``out×in`` matrix, or a Conv kernel reshaped to
``out×(in·kh·kw)``) is decomposed once, ``W = U diag(s) Vᵀ`` (``torch.linalg.svd`` in float64),
and the layer is rebuilt as three pieces (methods.md §4.2, official ``svf_torch.py``)::

    conv_V : Conv2d(in → rank, the original kernel / stride / padding / dilation, no bias)   = Vᵀ
    vector_S : (1, rank, 1, 1) parameter                                                   = s
    conv_U : Conv2d(rank → out, 1×1, the original bias)                                    = U

    layer(x) = conv_U( vector_S ⊙ conv_V(x) )        (Linear: fc_V, vector_S (1, rank), fc_U)

so the output equals the original layer at initialisation (up to float rounding). Only
``vector_S`` is trained; ``U``, ``V`` and the bias stay frozen. Keys change from
``neck.0.weight`` to ``neck.0.conv_V.weight``, ``neck.0.conv_U.weight``, ``neck.0.conv_U.bias``,
``neck.0.vector_S``; :func:`parser_to_dense` folds them back into ``U diag(s) Vᵀ`` so the state
dict loads into the unmodified network again.

Rank rule (official ``round_to_nearest``): ``rank = floor(floor(n·ratio)/4)·4`` clamped to
``[1, n]`` with ``n = min(out, in·kh·kw)``. With ``ratio = 1`` the decomposition is exact
whenever ``n`` is a multiple of 4 (every SAM layer); ``rank_multiple=1`` keeps every other shape
exact too.

Scopes (which layers of SAM's image encoder are decomposed; :data:`PARSER_SCOPES`):

* ``neck`` (default): the two neck convolutions (1×1 ``C→256`` and 3×3 ``256→256``), 512
  trainable singular values for every SAM size — the rule the official script intends;
* ``all_conv``: every ``nn.Conv2d`` of the encoder (adds the 16×16 patch-embedding conv) — the
  layers the released script decomposes;
* ``all_linear_and_conv``: also every ``nn.Linear`` (attention qkv/proj, MLP).

Deviations from the official code, on purpose: (1) the intended trainable set (singular values
only) instead of the released script's precedence slip (``if 'vector_S' and 'neck' in name``)
that unfreezes every neck parameter; (2) the SVD is computed in float64 but the factors are stored
in the layer's own dtype (float32 for SAM), so the decomposed model runs in one dtype; the
official code keeps ``vector_S`` in float64, which mixes dtypes inside the layer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from geolesf.errors import ConfigError, ModelError

PARSER_SCOPES = ("neck", "all_conv", "all_linear_and_conv")


def parser_rank(n: int, ratio: float = 1.0, multiple: int = 4) -> int:
    """Official rank rule: ``floor(floor(n·ratio)/multiple)·multiple`` clamped to ``[1, n]``."""
    if n < 1:
        raise ModelError(f"cannot decompose a weight with min(out, in) = {n}")
    if not 0 < ratio <= 1:
        raise ConfigError(f"parser rank ratio must be in (0, 1], found {ratio}")
    rank = math.floor(math.floor(n * ratio) / multiple) * multiple
    return int(min(max(rank, 1), n))


def _svd(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``U (out, rank)``, ``s (rank,)``, ``Vh (rank, in)`` of ``matrix`` computed in float64."""
    u, s, vh = torch.linalg.svd(matrix.detach().to(torch.float64), full_matrices=False)
    return u[:, :rank], s[:rank], vh[:rank]


class SVDConv2d(nn.Module):
    """``conv_U(vector_S ⊙ conv_V(x))``: a Conv2d reparameterised by its singular values."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, bias: bool = True, padding_mode: str = "zeros",
                 rank: int = 1, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.conv_V = nn.Conv2d(in_channels, rank, kernel_size, stride, padding, dilation, 1, False,
                                padding_mode, dtype=dtype)
        self.vector_S = nn.Parameter(torch.ones(1, rank, 1, 1, dtype=dtype))
        self.conv_U = nn.Conv2d(rank, out_channels, 1, 1, 0, 1, 1, bias, dtype=dtype)
        self.rank = rank

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, ratio: float = 1.0, rank_multiple: int = 4) -> SVDConv2d:
        if conv.groups != 1:
            raise ModelError(f"SVD reparameterisation needs groups=1 convolutions, found groups={conv.groups}")
        out_c, in_c, kh, kw = conv.weight.shape
        rank = parser_rank(min(out_c, in_c * kh * kw), ratio, rank_multiple)
        new = cls(in_c, out_c, (kh, kw), conv.stride, conv.padding, conv.dilation, conv.bias is not None,
                  conv.padding_mode, rank=rank, dtype=conv.weight.dtype).to(conv.weight.device)
        u, s, vh = _svd(conv.weight.reshape(out_c, -1), rank)
        with torch.no_grad():
            new.conv_V.weight.copy_(vh.reshape(rank, in_c, kh, kw))
            new.conv_U.weight.copy_(u.reshape(out_c, rank, 1, 1))
            new.vector_S.copy_(s.reshape(1, rank, 1, 1))
            if conv.bias is not None:
                new.conv_U.bias.copy_(conv.bias)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_U(self.conv_V(x) * self.vector_S)

    def dense_weight(self) -> torch.Tensor:
        """``U diag(s) Vᵀ`` reshaped to the original ``(out, in, kh, kw)`` kernel."""
        return fold_conv(self.conv_U.weight, self.vector_S, self.conv_V.weight)

    def to_dense(self) -> nn.Conv2d:
        v = self.conv_V
        conv = nn.Conv2d(v.in_channels, self.conv_U.out_channels, v.kernel_size, v.stride, v.padding,
                         v.dilation, 1, self.conv_U.bias is not None, v.padding_mode,
                         dtype=v.weight.dtype, device=v.weight.device)
        with torch.no_grad():
            conv.weight.copy_(self.dense_weight())
            if conv.bias is not None:
                conv.bias.copy_(self.conv_U.bias)
        return conv


class SVDLinear(nn.Module):
    """``fc_U(vector_S ⊙ fc_V(x))``: a Linear reparameterised by its singular values."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, rank: int = 1,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.fc_V = nn.Linear(in_features, rank, bias=False, dtype=dtype)
        self.vector_S = nn.Parameter(torch.ones(1, rank, dtype=dtype))
        self.fc_U = nn.Linear(rank, out_features, bias=bias, dtype=dtype)
        self.rank = rank

    @classmethod
    def from_linear(cls, linear: nn.Linear, ratio: float = 1.0, rank_multiple: int = 4) -> SVDLinear:
        out_f, in_f = linear.weight.shape
        rank = parser_rank(min(out_f, in_f), ratio, rank_multiple)
        new = cls(in_f, out_f, linear.bias is not None, rank=rank, dtype=linear.weight.dtype).to(linear.weight.device)
        u, s, vh = _svd(linear.weight, rank)
        with torch.no_grad():
            new.fc_V.weight.copy_(vh)
            new.fc_U.weight.copy_(u)
            new.vector_S.copy_(s.reshape(1, rank))
            if linear.bias is not None:
                new.fc_U.bias.copy_(linear.bias)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_U(self.fc_V(x) * self.vector_S)

    def dense_weight(self) -> torch.Tensor:
        return fold_linear(self.fc_U.weight, self.vector_S, self.fc_V.weight)

    def to_dense(self) -> nn.Linear:
        lin = nn.Linear(self.fc_V.in_features, self.fc_U.out_features, self.fc_U.bias is not None,
                        dtype=self.fc_V.weight.dtype, device=self.fc_V.weight.device)
        with torch.no_grad():
            lin.weight.copy_(self.dense_weight())
            if lin.bias is not None:
                lin.bias.copy_(self.fc_U.bias)
        return lin


def fold_conv(u_w: torch.Tensor, s: torch.Tensor, v_w: torch.Tensor) -> torch.Tensor:
    """Kernel ``(out, in, kh, kw)`` from ``conv_U.weight``, ``vector_S``, ``conv_V.weight`` (float64 math)."""
    rank = v_w.shape[0]
    u = u_w.reshape(u_w.shape[0], rank).to(torch.float64)
    w = (u * s.reshape(1, rank).to(torch.float64)) @ v_w.reshape(rank, -1).to(torch.float64)
    return w.reshape(u_w.shape[0], *v_w.shape[1:]).to(v_w.dtype)


def fold_linear(u_w: torch.Tensor, s: torch.Tensor, v_w: torch.Tensor) -> torch.Tensor:
    """Weight ``(out, in)`` from ``fc_U.weight``, ``vector_S``, ``fc_V.weight`` (float64 math)."""
    w = (u_w.to(torch.float64) * s.reshape(1, -1).to(torch.float64)) @ v_w.to(torch.float64)
    return w.to(v_w.dtype)


def _in_scope(name: str, module: nn.Module, scope: str) -> bool:
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            return False
        return scope != "neck" or name.split(".")[0] == "neck"
    if isinstance(module, nn.Linear):
        return scope == "all_linear_and_conv"
    return False


def svd_reparameterise(root: nn.Module, scope: str = "neck", ratio: float = 1.0, rank_multiple: int = 4,
                       exclude: Iterable[str] = ()) -> dict[str, int]:
    """Replace the in-scope Linear/Conv2d layers of ``root`` (SAM's image encoder) in place.

    Layer names are relative to ``root``; ``neck`` selects the layers under ``root.neck``.
    Returns ``{layer name: rank}`` of the decomposed layers.
    """
    if scope not in PARSER_SCOPES:
        raise ConfigError(f"parser scope '{scope}' is not one of {', '.join(PARSER_SCOPES)}")
    excluded = set(exclude)
    targets = [(n, m) for n, m in root.named_modules() if n and n not in excluded and _in_scope(n, m, scope)]
    if not targets:
        raise ModelError(f"parser scope '{scope}' matches no Linear/Conv2d layer of {type(root).__name__}")
    ranks = {}
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        if isinstance(module, nn.Conv2d):
            new: nn.Module = SVDConv2d.from_conv(module, ratio, rank_multiple)
        else:
            new = SVDLinear.from_linear(module, ratio, rank_multiple)
        setattr(parent, child, new)
        ranks[name] = new.rank
    return ranks


def parser_trainable_count(root: nn.Module, scope: str = "neck", ratio: float = 1.0, rank_multiple: int = 4) -> int:
    """Number of singular values :func:`svd_reparameterise` would create (from shapes only; works on meta tensors)."""
    if scope not in PARSER_SCOPES:
        raise ConfigError(f"parser scope '{scope}' is not one of {', '.join(PARSER_SCOPES)}")
    total = 0
    for name, m in root.named_modules():
        if name and _in_scope(name, m, scope):
            w = m.weight
            total += parser_rank(min(w.shape[0], int(w[0].numel())), ratio, rank_multiple)
    return total


def singular_value_parameters(root: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, vector_S)`` of every decomposed layer under ``root``."""
    return [(n, p) for n, p in root.named_parameters() if n.endswith("vector_S")]


def train_singular_values_only(root: nn.Module) -> int:
    """Freeze everything under ``root`` except the singular values; returns their count."""
    for p in root.parameters():
        p.requires_grad_(False)
    total = 0
    for _, p in singular_value_parameters(root):
        p.requires_grad_(True)
        total += p.numel()
    return total


def parser_to_dense(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fold every decomposed layer of a state dict back into ``U diag(s) Vᵀ``.

    ``P.conv_V.weight / P.conv_U.weight / P.conv_U.bias / P.vector_S`` become ``P.weight`` /
    ``P.bias`` (and ``fc_*`` likewise for Linear layers); other keys are copied unchanged, in
    the original order, so the result loads into the unmodified network.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        prefix = _svd_prefix(key)
        if prefix is None or prefix + "vector_S" not in state_dict:
            out[key] = value
            continue
        if prefix + "weight" in out:
            continue
        kind = "conv" if prefix + "conv_U.weight" in state_dict else "fc"
        u_key, v_key = f"{prefix}{kind}_U.weight", f"{prefix}{kind}_V.weight"
        for needed in (u_key, v_key):
            if needed not in state_dict:
                raise ModelError(f"state dict has {prefix}vector_S but lacks {needed}; cannot fold it back")
        fold = fold_conv if kind == "conv" else fold_linear
        out[prefix + "weight"] = fold(state_dict[u_key], state_dict[prefix + "vector_S"], state_dict[v_key])
        if f"{prefix}{kind}_U.bias" in state_dict:
            out[prefix + "bias"] = state_dict[f"{prefix}{kind}_U.bias"]
    return out


def _svd_prefix(key: str) -> str | None:
    """``'neck.0.'`` for ``'neck.0.conv_V.weight'`` / ``'neck.0.vector_S'``; None otherwise."""
    if key.endswith("vector_S"):
        return key[: -len("vector_S")]
    for part in ("conv_U.", "conv_V.", "fc_U.", "fc_V."):
        at = key.rfind(part)
        if at >= 0 and (at == 0 or key[at - 1] == "."):
            return key[:at]
    return None


def merge_svd_layers(root: nn.Module) -> int:
    """Replace every :class:`SVDConv2d` / :class:`SVDLinear` under ``root`` by its dense layer."""
    n = 0
    for name, module in list(root.named_modules()):
        if isinstance(module, (SVDConv2d, SVDLinear)):
            parent_name, _, child = name.rpartition(".")
            parent = root.get_submodule(parent_name) if parent_name else root
            setattr(parent, child, module.to_dense())
            n += 1
    return n
