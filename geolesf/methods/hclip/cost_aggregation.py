"""Open-vocabulary segmentation head: cost aggregation over CLIP patch/text embeddings.

A compact re-design in the spirit of CAT-Seg (Cho et al., CVPR 2024), the base segmenter of
H-CLIP. Shapes for a batch of ``B`` images, ``C`` classes, ``P`` prompt templates, a ``h×w`` patch
grid, CLIP embedding size ``E`` and tower width ``W``:

1. **Cost volume** ``cost[b, c, p] = ⟨img_emb[b, :, y, x], txt_emb[c, p]⟩`` — cosine similarities
   ``(B, C, P, h, w)``; a 7×7 convolution embeds the ``P`` template channels of each class into
   ``hidden`` channels (CAT-Seg: same kernel; classes are folded into the batch, so the head works
   for any number and order of classes).
2. ``layers`` × **aggregation block**, each
   - *spatial aggregation*: a residual block of two 3×3 convolutions over the class embedding
     concatenated with an appearance guidance (a 1×1 projection of the CLIP patch embeddings,
     ``guidance_dim`` channels; the concatenation is computed as a sum of two convolutions, see
     :class:`GuidedConv`, so the guidance is never copied per class). CAT-Seg uses Swin windows here; convolutions keep the head small,
     deterministic on CPU and free of window-size constraints on tile sizes.
   - *class aggregation*: per pixel, multi-head self-attention across the ``C`` classes (no
     positional encoding, so permutation-equivariant in the classes), queries/keys augmented with a
     text guidance (a projection of the template-averaged text embedding). CAT-Seg uses linear
     attention; softmax attention is used here (exact, and ``C`` ≤ a few hundred).
3. **Upsampling decoder**: for each stage, ×2 bilinear upsampling, then concatenation with a
   guidance map made from an intermediate CLIP layer (``ConvTranspose2d`` to the stage resolution,
   CAT-Seg's decoder guidance) and a 3×3 convolution to ``decoder_dims[k]`` channels.
4. A 3×3 convolution gives one logit per class and pixel: ``(B, C, h·2^S, w·2^S)``.

The head never sees class ids, only embeddings, so a model trained on COCO-Stuff classes can be
applied to any list of names.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch), ch)


class GuidedConv(nn.Module):
    """``conv([x, guide])`` for per-class maps ``x`` ``(B·C, cin, h, w)`` and a per-image ``guide``
    ``(B, g, h, w)``, computed as ``conv_x(x) + conv_g(guide)`` broadcast over the classes — the same
    result as concatenating the guide to every class, without materialising ``C`` copies of it."""

    def __init__(self, cin: int, guidance: int, cout: int) -> None:
        super().__init__()
        self.conv_x = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv_g = nn.Conv2d(guidance, cout, 3, padding=1, bias=False) if guidance else None

    def forward(self, x: torch.Tensor, guide: torch.Tensor | None) -> torch.Tensor:
        y = self.conv_x(x)
        if self.conv_g is None or guide is None:
            return y
        g = self.conv_g(guide)
        b = g.shape[0]
        return (y.reshape(b, -1, *y.shape[1:]) + g.unsqueeze(1)).reshape(y.shape)


class SpatialAggregation(nn.Module):
    def __init__(self, hidden: int, guidance: int) -> None:
        super().__init__()
        self.conv1 = GuidedConv(hidden, guidance, hidden)
        self.body = nn.Sequential(_norm(hidden), nn.GELU(), nn.Conv2d(hidden, hidden, 3, padding=1), _norm(hidden))

    def forward(self, x: torch.Tensor, guide: torch.Tensor | None) -> torch.Tensor:
        """``x``: ``(B·C, hidden, h, w)``; ``guide``: ``(B, guidance, h, w)`` or ``None``."""
        return F.gelu(x + self.body(self.conv1(x, guide)))


class ClassAggregation(nn.Module):
    def __init__(self, hidden: int, text_guidance: int, heads: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.qk = nn.Linear(hidden, 2 * hidden)
        # = Linear(hidden + text_guidance) on [y, text], without copying the text guidance per pixel
        self.qk_text = nn.Linear(text_guidance, 2 * hidden, bias=False) if text_guidance else None
        self.v = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)
        self.heads = heads
        self.mlp = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, 2 * hidden), nn.GELU(),
                                 nn.Linear(2 * hidden, hidden))

    def forward(self, x: torch.Tensor, text: torch.Tensor | None) -> torch.Tensor:
        """``x``: ``(N, C, hidden)`` (N = pixels); ``text``: ``(C, text_guidance)`` or ``None``."""
        n, c, d = x.shape
        y = self.norm(x)
        qk = self.qk(y)
        if self.qk_text is not None and text is not None:
            qk = qk + self.qk_text(text).unsqueeze(0)
        q, k = qk.chunk(2, -1)
        v = self.v(y)
        split = lambda t: t.reshape(n, c, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        a = F.scaled_dot_product_attention(split(q), split(k), split(v))
        x = x + self.out(a.transpose(1, 2).reshape(n, c, d))
        return x + self.mlp(x)


class CostAggregationHead(nn.Module):
    """Cost volume → aggregated, upsampled per-class logits (see the module docstring)."""

    def __init__(self, embed_dim: int, clip_width: int, prompts: int, *, hidden: int = 128,
                 guidance_dim: int = 128, text_guidance_dim: int = 128, layers: int = 2, heads: int = 4,
                 decoder_dims: Sequence[int] = (64, 32), decoder_guidance_dims: Sequence[int] = (256, 128),
                 decoder_guidance: bool = True) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden {hidden} must be a multiple of heads {heads}")
        self.prompts = prompts
        self.embed = nn.Conv2d(prompts, hidden, 7, padding=3)
        self.guidance = nn.Sequential(nn.Conv2d(embed_dim, guidance_dim, 1), nn.GELU()) if guidance_dim else None
        self.text_guidance = nn.Sequential(nn.Linear(embed_dim, text_guidance_dim), nn.GELU()) \
            if text_guidance_dim else None
        self.spatial = nn.ModuleList(SpatialAggregation(hidden, guidance_dim) for _ in range(layers))
        self.classwise = nn.ModuleList(ClassAggregation(hidden, text_guidance_dim, heads) for _ in range(layers))
        self.decoder_guidance = decoder_guidance
        self.up_guides = nn.ModuleList()
        self.decoders = nn.ModuleList()
        self.decoder_acts = nn.ModuleList()
        cin = hidden
        for k, (dd, gd) in enumerate(zip(decoder_dims, decoder_guidance_dims)):
            scale = 2 ** (k + 1)
            gd = gd if decoder_guidance else 0
            if gd:
                self.up_guides.append(nn.ConvTranspose2d(clip_width, gd, scale, stride=scale))
            self.decoders.append(GuidedConv(cin, gd, dd))
            self.decoder_acts.append(nn.Sequential(_norm(dd), nn.GELU()))
            cin = dd
        self.logit = nn.Conv2d(cin, 1, 3, padding=1)

    @property
    def guidance_count(self) -> int:
        """How many intermediate CLIP token maps the decoder expects."""
        return len(self.up_guides)

    def forward(self, img_emb: torch.Tensor, txt_emb: torch.Tensor,
                guides: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        """``img_emb`` ``(B, E, h, w)`` and ``txt_emb`` ``(C, P, E)``, both L2-normalised → ``(B, C, H', W')``."""
        b, _, h, w = img_emb.shape
        c, p, _ = txt_emb.shape
        cost = torch.einsum("behw,cpe->bcphw", img_emb, txt_emb)
        x = self.embed(cost.reshape(b * c, p, h, w))
        app = self.guidance(img_emb) if self.guidance is not None else None
        text = self.text_guidance(txt_emb.mean(1)) if self.text_guidance is not None else None
        for spatial, classwise in zip(self.spatial, self.classwise):
            x = spatial(x, app)
            d = x.shape[1]
            t = x.reshape(b, c, d, h * w).permute(0, 3, 1, 2).reshape(b * h * w, c, d)
            t = classwise(t, text)
            x = t.reshape(b, h * w, c, d).permute(0, 2, 3, 1).reshape(b * c, d, h, w)
        for k, (dec, act) in enumerate(zip(self.decoders, self.decoder_acts)):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            g = self.up_guides[k](guides[k]) if k < len(self.up_guides) else None
            x = act(dec(x, g))
        out = self.logit(x)
        return out.reshape(b, c, *out.shape[-2:])
