"""H-CLIP's parameter-efficient fine-tuning: block-diagonal orthogonal rotations of CLIP's q/k/v.

For every transformer block ``ℓ`` of the image and text encoders and each of the q, k and v
projection weights ``W ∈ R^{d×d}`` (methods.md §1.2)::

    W' = W · Rᵀ,   R = blockdiag(R_1, …, R_r),   R_i ∈ O(b),   r = d / b

so each neuron row ``w_i`` becomes ``R w_i``: pairwise neuron angles, the neuron Gram matrix
``W Wᵀ`` and hence the hyperspherical energy are unchanged. Each block is a Cayley transform
``R = (I − S)(I + S)^{-1}`` of a skew matrix ``S`` (``b(b−1)/2`` free numbers, ``S = 0`` → ``R = I``
exactly, so the model equals CLIP at step 0). ``transform="free"`` instead learns ``R = I + B`` with
an unconstrained ``B`` (the relaxed image-side option of the spec, as in the sibling HyperCLIP code).

open_clip's attention is ``nn.MultiheadAttention`` whose q, k, v weights are one fused
``in_proj_weight`` of shape ``(3d, d)``. :class:`OrthogonalInProj` is a
``torch.nn.utils.parametrize`` parametrisation of that tensor: it splits it into its q, k, v
thirds, rotates each with its own block-diagonal ``R`` and concatenates them again, so the
attention module, its bias and its fast paths are untouched.

**Dual cross-relation communication (DCRC)** — exact form unpublished; the choice in methods.md
§1.2 with two documented adaptations. The raw parameters of modality ``m`` form a tensor
``T_m ∈ R^{L_m × 3 × r_m × p}`` (``p`` = parameters per block). The parameters actually used by layer
``ℓ`` are::

    S_{m,ℓ} = Φ[m,m] · Σ_ℓ' Ψ_m[ℓ,ℓ'] T_{m,ℓ'}  +  Φ[m,m̄] · (Σ_ℓ' Ψ_m̄[a(ℓ),ℓ'] T_{m̄,ℓ'})[blocks < r_c]

with ``Φ ∈ R^{2×2}`` (cross-modal relation) and ``Ψ_m ∈ R^{L_m×L_m}`` (cross-layer relation),
all initialised to the identity. Adaptations: (1) one ``Ψ`` *per modality*, because the encoders
may have different depths (ViT-L/14: 24 image vs 12 text blocks); (2) the image and text widths
differ (768 vs 512 for ViT-B/16), so the cross-modal term acts on the ``r_c = min(r_img, r_txt)``
leading blocks, and layer ``ℓ`` of ``m`` reads layer ``a(ℓ) = ⌊ℓ·L_m̄ / L_m⌋`` of the other modality.
A linear mix of skew matrices is skew, so Cayley blocks stay exactly orthogonal; a free-block
contribution entering a Cayley modality is first made skew (``(B − Bᵀ)/2``).

:func:`hyperspherical_energy` gives ``HE(W) = Σ_{i≠j} ‖ŵ_i − ŵ_j‖^{-1}`` for the optional text-side
penalty ``|HE(W') − HE(W)| / HE(W)`` (:meth:`DualCrossRelation.text_energy_penalty`), which is zero
up to rounding for Cayley blocks and matters only for ``text_transform="free"``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from geolesf.errors import ModelError

MODALITIES = ("image", "text")
TRANSFORMS = ("cayley", "free")


def skew_from_upper(params: torch.Tensor, b: int) -> torch.Tensor:
    """``(..., b(b−1)/2)`` upper-triangle entries → ``(..., b, b)`` skew-symmetric matrices."""
    iu = torch.triu_indices(b, b, offset=1, device=params.device)
    s = params.new_zeros(*params.shape[:-1], b, b)
    s[..., iu[0], iu[1]] = params
    return s - s.transpose(-1, -2)


def cayley(skew: torch.Tensor) -> torch.Tensor:
    """``R = (I − S)(I + S)^{-1}`` for a batch of skew matrices ``(..., b, b)`` (orthogonal, ``S=0 → I``)."""
    eye = torch.eye(skew.shape[-1], dtype=skew.dtype, device=skew.device).expand_as(skew)
    # (I − S) and (I + S)^{-1} commute (both are functions of S), so R = (I + S)^{-1}(I − S).
    return torch.linalg.solve(eye + skew, eye - skew)


def hyperspherical_energy(weight: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``Σ_{i≠j} ‖ŵ_i − ŵ_j‖^{-1}`` over the neuron rows ``w_i`` of ``weight`` (``(n, d)``)."""
    w = weight / weight.norm(dim=1, keepdim=True).clamp_min(eps)
    dist = torch.cdist(w.double(), w.double())
    off = ~torch.eye(w.shape[0], dtype=torch.bool, device=w.device)
    return (1.0 / dist[off].clamp_min(eps)).sum().to(weight.dtype)


def rotate_qkv(weight: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """Fused ``(3d, d)`` in-projection ``W`` and rotations ``(3, r, b, b)`` → ``W' = W Rᵀ`` per q/k/v."""
    three, r, b, _ = rot.shape
    d = weight.shape[1]
    w = weight.reshape(three, weight.shape[0] // three, r, b)
    return torch.einsum("pork,prjk->porj", w, rot.to(w.dtype)).reshape(weight.shape[0], d)


class OrthogonalInProj(nn.Module):
    """Parametrisation of one ``in_proj_weight``: ``W ↦ [W_q R_qᵀ; W_k R_kᵀ; W_v R_vᵀ]``.

    The shared :class:`DualCrossRelation` is held by plain reference (not a submodule), so its
    parameters appear once in the model's state dict, not once per layer.
    """

    def __init__(self, relation: DualCrossRelation, modality: str, layer: int) -> None:
        super().__init__()
        object.__setattr__(self, "_relation", relation)
        self.modality, self.layer = modality, int(layer)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return rotate_qkv(weight, self._relation.rotations(self.modality, self.layer))


class DualCrossRelation(nn.Module):
    """All learnable rotation parameters of both encoders plus the DCRC relation matrices."""

    def __init__(self, widths: dict[str, int], depths: dict[str, int], block_size: int = 32,
                 transforms: dict[str, str] | None = None, cross_modal: bool = True,
                 cross_layer: bool = True) -> None:
        super().__init__()
        transforms = dict(transforms or {})
        self.b = int(block_size)
        self.widths, self.depths = dict(widths), dict(depths)
        self.transforms = {m: transforms.get(m, "cayley") for m in MODALITIES}
        for m in MODALITIES:
            if self.transforms[m] not in TRANSFORMS:
                raise ModelError(f"hclip: {m}_transform must be one of {TRANSFORMS}, found "
                                 f"'{self.transforms[m]}'")
            if self.widths[m] % self.b:
                raise ModelError(f"hclip: block_size {self.b} must divide the {m} encoder width "
                                 f"{self.widths[m]}")
        self.blocks = {m: self.widths[m] // self.b for m in MODALITIES}
        self.common_blocks = min(self.blocks.values())
        self.cross_modal, self.cross_layer = bool(cross_modal), bool(cross_layer)
        self.params = nn.ParameterDict()
        for m in MODALITIES:
            per_block = self.b * (self.b - 1) // 2 if self.transforms[m] == "cayley" else self.b * self.b
            self.params[m] = nn.Parameter(torch.zeros(self.depths[m], 3, self.blocks[m], per_block))
        self.phi = nn.Parameter(torch.eye(2), requires_grad=self.cross_modal)
        self.psi = nn.ParameterDict({m: nn.Parameter(torch.eye(self.depths[m]), requires_grad=self.cross_layer)
                                     for m in MODALITIES})

    def _matrices(self, m: str, params: torch.Tensor) -> torch.Tensor:
        """Raw per-block parameters → ``(…, b, b)`` generator matrices (skew or free)."""
        if self.transforms[m] == "cayley":
            return skew_from_upper(params, self.b)
        return params.reshape(*params.shape[:-1], self.b, self.b)

    def _mixed_layer(self, m: str, layer: int) -> torch.Tensor:
        """``Σ_ℓ' Ψ_m[layer, ℓ'] T_{m,ℓ'}`` as ``(3, r_m, b, b)`` generator matrices."""
        mats = self._matrices(m, self.params[m])
        return torch.einsum("l,lprij->prij", self.psi[m][layer], mats)

    def generator(self, m: str, layer: int) -> torch.Tensor:
        """The generator of layer ``layer`` of modality ``m`` after DCRC mixing, ``(3, r_m, b, b)``."""
        i, j = MODALITIES.index(m), 1 - MODALITIES.index(m)
        other = MODALITIES[j]
        own = self.phi[i, i] * self._mixed_layer(m, layer)
        if not self.cross_modal:
            return own
        a = min(self.depths[other] - 1, layer * self.depths[other] // self.depths[m])
        cross = self._mixed_layer(other, a)[:, : self.common_blocks]
        if self.transforms[m] == "cayley" and self.transforms[other] == "free":
            cross = 0.5 * (cross - cross.transpose(-1, -2))
        c = self.common_blocks
        return torch.cat([own[:, :c] + self.phi[i, j] * cross, own[:, c:]], dim=1)

    def rotations(self, m: str, layer: int) -> torch.Tensor:
        """Block rotations ``(3, r_m, b, b)`` of layer ``layer`` of modality ``m``."""
        g = self.generator(m, layer)
        if self.transforms[m] == "cayley":
            return cayley(g)
        return torch.eye(self.b, dtype=g.dtype, device=g.device) + g

    def text_energy_penalty(self, text_weights: list[torch.Tensor]) -> torch.Tensor:
        """Mean relative HE change ``|HE(W') − HE(W)|/HE(W)`` over the text q/k/v weights.

        ``text_weights`` are the frozen fused ``(3d, d)`` in-projections of the text blocks, in order.
        """
        total = self.params["text"].new_zeros(())
        n = 0
        for layer, w in enumerate(text_weights):
            w_new = rotate_qkv(w, self.rotations("text", layer))
            for part, part_new in zip(w.chunk(3), w_new.chunk(3)):
                he0 = hyperspherical_energy(part.detach())
                total = total + (hyperspherical_energy(part_new) - he0).abs() / he0
                n += 1
        return total / max(n, 1)


def _resblocks(clip: nn.Module) -> dict[str, list[nn.Module]]:
    try:
        return {"image": list(clip.visual.transformer.resblocks), "text": list(clip.transformer.resblocks)}
    except AttributeError as exc:
        raise ModelError(f"hclip: expected an open_clip CLIP model with ViT image tower ({exc})") from None


def apply_orthogonal_peft(clip: nn.Module, block_size: int = 32, *, image_transform: str = "cayley",
                          text_transform: str = "cayley", cross_modal: bool = True, cross_layer: bool = True,
                          train_positional: bool = True) -> DualCrossRelation:
    """Freeze ``clip`` and reparameterise q/k/v of every block of both encoders (in place).

    Returns the :class:`DualCrossRelation` holding every new learnable parameter. The positional
    embeddings of both encoders stay trainable when ``train_positional`` (as in the sibling code).
    """
    blocks = _resblocks(clip)
    for name, blist in blocks.items():
        for blk in blist:
            if not isinstance(getattr(blk, "attn", None), nn.MultiheadAttention) or \
                    getattr(blk.attn, "in_proj_weight", None) is None:
                raise ModelError(f"hclip: {name} block without a fused nn.MultiheadAttention in_proj_weight")
    widths = {m: blocks[m][0].attn.embed_dim for m in MODALITIES}
    depths = {m: len(blocks[m]) for m in MODALITIES}
    relation = DualCrossRelation(widths, depths, block_size,
                                 {"image": image_transform, "text": text_transform},
                                 cross_modal=cross_modal, cross_layer=cross_layer)
    for p in clip.parameters():
        p.requires_grad_(False)
    for m in MODALITIES:
        for layer, blk in enumerate(blocks[m]):
            parametrize.register_parametrization(blk.attn, "in_proj_weight",
                                                 OrthogonalInProj(relation, m, layer), unsafe=True)
    if train_positional:
        clip.visual.positional_embedding.requires_grad_(True)
        clip.positional_embedding.requires_grad_(True)
    return relation


def frozen_in_proj(clip: nn.Module, modality: str) -> Iterator[torch.Tensor]:
    """The original (frozen) fused in-projection weights of one encoder, block by block."""
    for blk in _resblocks(clip)[modality]:
        yield blk.attn.parametrizations.in_proj_weight.original


def parameter_report(clip: nn.Module, relation: DualCrossRelation, head: nn.Module | None = None) -> dict[str, Any]:
    """Trainable-parameter counts against the CLIP size (the paper reports ≈4 % for ViT-B/16).

    ``clip_parameters`` counts both frozen towers; ``rotation`` the DCRC tensor ``T`` (Cayley:
    ``b(b−1)/2`` per block, free: ``b²``), ``relation`` the ``Φ``/``Ψ`` matrices, ``positional`` the
    trainable positional embeddings, ``head`` the segmentation head.
    """
    clip_total = sum(p.numel() for p in clip.parameters())
    positional = sum(p.numel() for p in clip.parameters() if p.requires_grad)
    rotation = sum(p.numel() for p in relation.params.values())
    rel = sum(p.numel() for p in [relation.phi, *relation.psi.values()] if p.requires_grad)
    head_n = sum(p.numel() for p in head.parameters() if p.requires_grad) if head is not None else 0
    peft = rotation + rel + positional
    return {"clip_parameters": clip_total, "rotation": rotation, "relation": rel, "positional": positional,
            "head": head_n, "peft_trainable": peft, "peft_ratio": peft / clip_total,
            "total_trainable": peft + head_n, "total_ratio": (peft + head_n) / clip_total}
