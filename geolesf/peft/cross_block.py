"""Cross-block orchestration (SAM-COBOT) on Adapter and LoRA hosts, and the plain baselines.

Standard PEFT gives each ViT block its own low-rank coefficients. Cross-block orchestration
(methods.md §3, official ``SJTU-DeepVisionLab/SAM-COBOT``) adds two things inside every
block's low-rank bottleneck ``d`` (rank ``r``):

* a **relation matrix shared across blocks**: ``FacT_c ∈ R^{1×r×T}`` (init ones) and
  ``FacT_p ∈ R^{T×T}`` (init identity); block slot ``j`` uses ``c_j = (FacT_c @ FacT_p)[..., j]``,
  a mixture of every slot's coefficients (inter-block communication);
* a **quaternion (hyper-complex) linear projector** ``Q`` (``r → r``, ``r²/4`` parameters) and a
  per-block scale ``γ`` (init 1): ``d' = Q(d ⊙ c_j + γ ⊙ d)`` (intra-block enhancement).

Hosts (:func:`apply_cross_block`):

* ``adapter`` (``Adapter_relation``; one slot per block, ``r = 16``, ``T = depth``) wraps the
  block MLP: ``out = MLP(x) + s · up(Dropout(ReLU(d')))``, ``d = down(LayerNorm(x))``;
* ``lora`` (``TAM_CP_relation``; two slots per block for q and v, ``r = 4``, ``T = 2·depth``)
  wraps the fused ``qkv`` Linear: ``Δq = B_q(Q_q(A_q x ⊙ c_{2i} + γ[:r] ⊙ A_q x))``, ``Δv`` with
  slot ``2i+1`` and ``γ[r:]``.

``relation=False`` gives the plain Adapter / LoRA baselines through the same modules (no
relation tensors, no γ, no quaternion layer), so the four methods differ only in that switch.

Initialisation follows the code: adapter ``down`` kaiming-uniform(a=√5) with zero bias, ``up``
zeros; quaternion ``R = 0``, ``I, J, K ~ U[0, 1)``. LoRA host, ``lora_init`` (methods.md §3.3):

* ``"official"`` (default): the official ``init_weights`` (``remote/model/utils.py``), which
  ``remote/model/model_proxy_SAM_box.py`` applies with ``.apply(init_weights)`` to each of the four
  bias-free LoRA Linears ``A_q, B_q, A_v, B_v`` at model build — ``xavier_normal_`` on the weight of
  every ``nn.Linear`` (std ``√(2/(fan_in+fan_out))``), so **both** factors are random and the wrapped
  model does *not* equal frozen SAM at init. It is applied to those four Linears only: the quaternion
  projectors, ``γ`` and the relation tensors keep their own initialisation (as in the code). Order
  as in the code: ``A_q, A_v, B_q, B_v`` for ``TAM_CP_relation``, ``A_q, B_q, A_v, B_v`` for plain LoRA.
* ``"zero_b"`` — **deviation** from the official code: the usual LoRA convention (``A``
  kaiming-uniform(a=√5), ``B = 0``), which makes the initial model equal to frozen SAM exactly.

The quaternion weight uses the code's layout (``remote/quaternion_ops.py``): the four block
*columns* are ``[R; −I; −J; −K]``, ``[I; R; −K; J]``, ``[J; K; R; −I]``, ``[K; −J; I; R]`` and
``y = x @ W``, i.e. ``y = q ⊗ x`` (Hamilton product, weight on the left) for each group of four
features. methods.md §3.4 prints these four lists as block rows; that matrix is the block
transpose of the code's and both satisfy ``WᵀW = ‖q‖² I`` for scalar blocks.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from geolesf.errors import ConfigError, ModelError

HOSTS = ("adapter", "lora")
LORA_INITS = ("official", "zero_b")
DEFAULT_RANK = {"adapter": 16, "lora": 4}


def hamilton_weight(r: torch.Tensor, i: torch.Tensor, j: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The ``(4a, 4b)`` real matrix of a quaternion weight with components ``(a, b)`` each."""
    cols = [
        torch.cat([r, -i, -j, -k], dim=0),
        torch.cat([i, r, -k, j], dim=0),
        torch.cat([j, k, r, -i], dim=0),
        torch.cat([k, -j, i, r], dim=0),
    ]
    return torch.cat(cols, dim=1)


class QuaternionLinear(nn.Module):
    """Quaternion linear layer without bias: ``y = x @ W(R, I, J, K)``, ``n²/4`` parameters for ``n → n``."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        if in_features % 4 or out_features % 4:
            raise ModelError(f"quaternion layer sizes must be multiples of 4, found {in_features}→{out_features}")
        shape = (in_features // 4, out_features // 4)
        self.r_weight = nn.Parameter(torch.zeros(shape))
        self.i_weight = nn.Parameter(torch.rand(shape))
        self.j_weight = nn.Parameter(torch.rand(shape))
        self.k_weight = nn.Parameter(torch.rand(shape))

    def weight(self) -> torch.Tensor:
        return hamilton_weight(self.r_weight, self.i_weight, self.j_weight, self.k_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight()


class RelationMatrix(nn.Module):
    """The tensors shared by all blocks: ``FacT_c (1, r, T)`` = ones, ``FacT_p (T, T)`` = identity."""

    def __init__(self, rank: int, slots: int) -> None:
        super().__init__()
        self.FacT_c = nn.Parameter(torch.ones(1, rank, slots))
        self.FacT_p = nn.Parameter(torch.eye(slots))

    def coefficients(self) -> torch.Tensor:
        """``FacT_c @ FacT_p``: ``(1, r, T)``; slot ``j`` is ``[..., j]``."""
        return self.FacT_c @ self.FacT_p


class _Orchestrated(nn.Module):
    """Shared plumbing: the bottleneck transform ``d → Q(d ⊙ c + γ ⊙ d)`` for one or more slots."""

    def __init__(self, relation: RelationMatrix | None, slot: int, rank: int, n_paths: int) -> None:
        super().__init__()
        # Held outside the module tree so the shared tensors appear once in state_dict / parameters().
        self._relation = [relation]
        self.slot = slot
        self.rank = rank
        if relation is not None:
            self.gamma = nn.Parameter(torch.ones(rank * n_paths))
            self.quaternion = nn.ModuleList(QuaternionLinear(rank, rank) for _ in range(n_paths))

    @property
    def relation(self) -> RelationMatrix | None:
        return self._relation[0]

    def mix(self, d: torch.Tensor, path: int, coeffs: torch.Tensor | None) -> torch.Tensor:
        if self.relation is None:
            return d
        c = coeffs[0, :, self.slot + path]
        gamma = self.gamma[path * self.rank:(path + 1) * self.rank]
        return self.quaternion[path](d * c + gamma * d)


class CrossBlockAdapter(_Orchestrated):
    """Adapter around a block MLP (``Adapter_relation``; ``Adapter`` when ``relation`` is None)."""

    def __init__(self, mlp: nn.Module, dim: int, rank: int = 16, relation: RelationMatrix | None = None,
                 slot: int = 0, dropout: float = 0.1, scale: float = 1.0) -> None:
        super().__init__(relation, slot, rank, 1)
        self.mlp = mlp
        self.norm = nn.LayerNorm(dim)
        self.down = nn.Linear(dim, rank)
        self.up = nn.Linear(rank, dim)
        self.dropout = dropout
        self.scale = scale
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
            nn.init.zeros_(self.down.bias)
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.mlp(x)
        coeffs = self.relation.coefficients() if self.relation is not None else None
        d = self.mix(self.down(self.norm(x)), 0, coeffs)
        d = F.dropout(F.relu(d), p=self.dropout, training=self.training)
        return residual + self.scale * self.up(d)


class CrossBlockLoRAQKV(_Orchestrated):
    """LoRA on the q and v thirds of a fused qkv Linear (``TAM_CP_relation``; plain LoRA without relation)."""

    def __init__(self, qkv: nn.Linear, rank: int = 4, relation: RelationMatrix | None = None, slot: int = 0,
                 init: str = "official") -> None:
        super().__init__(relation, slot, rank, 2)
        if init not in LORA_INITS:
            raise ConfigError(f"lora_init must be one of {', '.join(LORA_INITS)}, found '{init}'")
        self.qkv = qkv
        dim = qkv.in_features
        if qkv.out_features != 3 * dim:
            raise ModelError(f"LoRA host expects a fused qkv Linear {dim}→{3 * dim}, found {dim}→{qkv.out_features}")
        self.dim = dim
        self.a_q = nn.Linear(dim, rank, bias=False)
        self.b_q = nn.Linear(rank, dim, bias=False)
        self.a_v = nn.Linear(dim, rank, bias=False)
        self.b_v = nn.Linear(rank, dim, bias=False)
        self.init = init
        with torch.no_grad():
            if init == "official":  # init_weights: xavier_normal_ on every nn.Linear (no biases here)
                order = ((self.a_q, self.a_v, self.b_q, self.b_v) if relation is not None
                         else (self.a_q, self.b_q, self.a_v, self.b_v))
                for lin in order:
                    nn.init.xavier_normal_(lin.weight)
            else:  # zero_b (deviation): B = 0, the wrapped qkv equals the frozen one at init
                for a, b in ((self.a_q, self.b_q), (self.a_v, self.b_v)):
                    nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
                    nn.init.zeros_(b.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        coeffs = self.relation.coefficients() if self.relation is not None else None
        dq = self.b_q(self.mix(self.a_q(x), 0, coeffs))
        dv = self.b_v(self.mix(self.a_v(x), 1, coeffs))
        zeros = torch.zeros_like(dq)
        return qkv + torch.cat([dq, zeros, dv], dim=-1)

    def delta_weight(self) -> torch.Tensor:
        """``ΔW (3·dim, dim)`` such that this module equals ``Linear(W + ΔW, b)`` (for fold-back)."""
        rows = []
        coeffs = self.relation.coefficients() if self.relation is not None else None
        for path, (a, b) in enumerate(((self.a_q, self.b_q), (self.a_v, self.b_v))):
            inner = torch.eye(self.rank, dtype=a.weight.dtype, device=a.weight.device)
            inner = self.mix(inner, path, coeffs)  # rows: e_k ↦ Q(e_k ⊙ c + γ ⊙ e_k)
            rows.append(b.weight @ inner.T @ a.weight)
        zeros = torch.zeros_like(rows[0])
        return torch.cat([rows[0], zeros, rows[1]], dim=0)


def apply_cross_block(encoder: nn.Module, host: str, relation: bool = True, rank: int | None = None,
                      dropout: float = 0.1, lora_init: str = "official") -> RelationMatrix | None:
    """Wrap every block of a SAM ``ImageEncoderViT`` in place; returns the shared relation (or None).

    ``lora_init`` (LoRA host only): ``"official"`` (xavier-normal ``A`` and ``B``, the official
    ``init_weights``) or ``"zero_b"`` (deviation: ``B = 0``, initial model = frozen SAM).

    The relation module is attached to the encoder as ``encoder.cobo_relation`` so its two
    tensors appear once in the state dict (``image_encoder.cobo_relation.FacT_c`` / ``FacT_p``).
    """
    if host not in HOSTS:
        raise ConfigError(f"cross-block host must be one of {', '.join(HOSTS)}, found '{host}'")
    blocks = getattr(encoder, "blocks", None)
    if not blocks:
        raise ModelError(f"{type(encoder).__name__} has no ViT blocks to wrap")
    if lora_init not in LORA_INITS:
        raise ConfigError(f"lora_init must be one of {', '.join(LORA_INITS)}, found '{lora_init}'")
    rank = int(rank or DEFAULT_RANK[host])
    if relation and rank % 4:
        raise ConfigError(f"cross-block rank must be a multiple of 4 (quaternion projector), found {rank}")
    slots_per_block = 1 if host == "adapter" else 2
    shared = RelationMatrix(rank, slots_per_block * len(blocks)) if relation else None
    if shared is not None:
        encoder.cobo_relation = shared
    for i, blk in enumerate(blocks):
        slot = slots_per_block * i
        if host == "adapter":
            dim = blk.norm2.normalized_shape[0]
            blk.mlp = CrossBlockAdapter(blk.mlp, dim, rank, shared, slot, dropout)
        else:
            blk.attn.qkv = CrossBlockLoRAQKV(blk.attn.qkv, rank, shared, slot, init=lora_init)
    return shared


def cross_block_overhead(host: str, depth: int, rank: int | None = None) -> dict[str, int]:
    """Parameter counts of the orchestration parts (methods.md §3.4 formula).

    ``relation = r·T + T²``; per block ``γ`` (``r`` per path) and quaternion ``r²/4`` per path.
    """
    rank = int(rank or DEFAULT_RANK[host])
    paths = 1 if host == "adapter" else 2
    slots = paths * depth
    relation = rank * slots + slots * slots
    per_block = paths * rank + paths * rank * rank // 4
    return {"relation": relation, "per_block": per_block, "blocks": depth * per_block,
            "total": relation + depth * per_block}


def orchestration_parameter_count(encoder: nn.Module) -> int:
    """Measured count of relation + γ + quaternion parameters in a wrapped encoder."""
    total = 0
    for name, p in encoder.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("FacT_c", "FacT_p", "gamma") or ".quaternion." in f".{name}":
            total += p.numel()
    return total


def fold_lora_state_dict(model: nn.Module) -> dict[str, Any]:
    """State dict of a LoRA-hosted model with every ``CrossBlockLoRAQKV`` merged into its qkv Linear."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for name, module in model.named_modules():
        if not isinstance(module, CrossBlockLoRAQKV):
            continue
        with torch.no_grad():
            delta = module.delta_weight()
        base = f"{name}.qkv."
        weight = sd.pop(base + "weight")
        sd[f"{name}.weight"] = weight + delta.to(weight.dtype)
        if base + "bias" in sd:
            sd[f"{name}.bias"] = sd.pop(base + "bias")
        for key in [k for k in sd if k.startswith(f"{name}.") and k not in (f"{name}.weight", f"{name}.bias")]:
            del sd[key]
    for key in [k for k in sd if ".cobo_relation." in f".{k}"]:
        del sd[key]
    return sd
