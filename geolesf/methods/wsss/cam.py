"""``cam``: class activation maps (CAM) from CNN (ResNet) and Transformer (ViT) classifiers.

A multi-label classifier ``f`` (backbone → ``(B, D, h, w)`` feature map) with a bias-free 1×1
classifier ``w`` gives, for every foreground class ``c``, ``CAM_c(x) = ReLU(w_cᵀ f(x))``
(methods.md §5.2). Image scores are pooled from ``w_cᵀ f(x)``: global average pooling for the
plain CAM baseline, or USAGE's temperature pooling (:mod:`geolesf.methods.wsss.usage`).

Backbones (weights are optional and never downloaded; give a local file with ``weights=``):

* ``resnet18/34/50/101`` — torchvision ResNets; ``output_stride=16`` (default) turns the stride of
  the last stage into 1, the usual CAM setting. ``weights`` takes a torchvision state dict
  (e.g. ``resnet50-0676ba61.pth`` = ``ResNet50_Weights.IMAGENET1K_V1``).
* ``vit`` — a ViT / DeiT with a class token whose modules carry timm's names, so a timm state
  dict (``deit_small_patch16_224``) loads with ``weights=``; the patch tokens form the feature map
  and every block's attention is returned for affinity (:mod:`geolesf.losses.affinity`).
* ``simple`` — a small conv net (``width``, ``depth``) for CPU tests and quick aerial demos.

Inference (:func:`multiscale_cams`): the CAMs of several scales and their horizontal flips are
resized to the input, summed, passed through ReLU and normalised per class by their spatial
maximum. :func:`cams_to_seeds` turns normalised CAMs into seed labels with a background
threshold (or, for label sets without a background class such as aerial land cover, the argmax
over the tagged classes), an ignore value for uncertain pixels and a confidence map.
Dense CRF post-processing is not included (no maintained CRF package is available).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from geolesf.errors import ConfigError, ModelError
from geolesf.registry import register_model

IGNORE = 255
CNN_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "simple")
VIT_BACKBONES = ("vit",)


# --------------------------------------------------------------------------------------------
# backbones


class SimpleCNN(nn.Module):
    """``depth`` conv-BN-ReLU stages, each halving the resolution (the first by 2, output stride 2^depth)."""

    def __init__(self, in_chans: int = 3, width: int = 32, depth: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_chans
        for k in range(depth):
            cout = width * 2 ** min(k, 2)
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                       nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        self.body = nn.Sequential(*layers)
        self.out_dim = cin
        self.stride = 2**depth
        self.drop = nn.Dropout2d(dropout)

    def forward(self, x: torch.Tensor, adjust: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        f = self.body(x)
        if adjust:
            f = F.dropout2d(f, p=max(self.drop.p, 0.1), training=True)
        return f, []


class ResNetBackbone(nn.Module):
    """torchvision ResNet without pooling/fc; ``output_stride`` 32 or 16 (last stage stride 1)."""

    def __init__(self, depth: int = 50, in_chans: int = 3, output_stride: int = 16,
                 weights: str | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        import torchvision

        ctor = {18: torchvision.models.resnet18, 34: torchvision.models.resnet34,
                50: torchvision.models.resnet50, 101: torchvision.models.resnet101}
        if depth not in ctor:
            raise ModelError(f"cam: resnet depth must be one of 18, 34, 50, 101, found {depth}")
        net = ctor[depth](weights=None)
        if weights:
            _load_state(net, weights, drop_prefixes=())
        if in_chans != 3:
            net.conv1 = nn.Conv2d(in_chans, 64, 7, stride=2, padding=3, bias=False)
        if output_stride not in (16, 32):
            raise ModelError(f"cam: output_stride must be 16 or 32, found {output_stride}")
        if output_stride == 16:
            for m in net.layer4[0].modules():
                if isinstance(m, nn.Conv2d) and m.stride == (2, 2):
                    m.stride = (1, 1)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = nn.Sequential(net.layer1, net.layer2, net.layer3, net.layer4)
        self.out_dim = net.fc.in_features
        self.stride = output_stride
        self.dropout = dropout

    def forward(self, x: torch.Tensor, adjust: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        f = self.layers(self.stem(x))
        if adjust:
            f = F.dropout2d(f, p=max(self.dropout, 0.1), training=True)
        return f, []


class _Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, d)
        return self.proj(out), attn


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, drop_path: float) -> tuple[torch.Tensor, torch.Tensor]:
        y, attn = self.attn(self.norm1(x))
        x = x + _drop_path(y, drop_path)
        return x + _drop_path(self.mlp(self.norm2(x)), drop_path), attn


def _drop_path(x: torch.Tensor, p: float) -> torch.Tensor:
    """Stochastic depth on the residual branch (per sample), active whenever ``p > 0``."""
    if p <= 0:
        return x
    keep = (torch.rand(x.shape[0], *([1] * (x.ndim - 1)), device=x.device) >= p).to(x.dtype)
    return x * keep / (1 - p)


class ViTBackbone(nn.Module):
    """ViT/DeiT with a class token (timm module names); patch tokens → ``(B, D, H/p, W/p)``.

    Position embeddings are interpolated (bicubic) to the input's patch grid, so any input size
    divisible by ``patch_size`` works. Stochastic depth (``drop_path``) is applied only to
    *adjusted* forward passes (``adjust=True``: USAGE's self-adaptive network adjustment), so the
    reference view and inference stay deterministic.
    """

    def __init__(self, in_chans: int = 3, patch_size: int = 16, embed_dim: int = 384, depth: int = 12,
                 num_heads: int = 6, mlp_ratio: float = 4.0, img_size: int = 224, drop_path: float = 0.1,
                 weights: str | None = None) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ModelError(f"cam: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        grid = img_size // patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.blocks = nn.ModuleList(_Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.out_dim = embed_dim
        self.stride = patch_size
        self.drop_path = drop_path
        if weights:
            _load_state(self, weights, drop_prefixes=("head.", "head_dist.", "dist_token", "fc_norm."))

    def _pos(self, gh: int, gw: int) -> torch.Tensor:
        pos = self.pos_embed
        n = pos.shape[1] - 1
        g0 = int(round(n**0.5))
        if g0 * g0 == n and (g0, g0) == (gh, gw):
            return pos
        grid = pos[:, 1:].reshape(1, g0, g0, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
        return torch.cat([pos[:, :1], grid.flatten(2).transpose(1, 2)], 1)

    def forward(self, x: torch.Tensor, adjust: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        p = self.stride
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ModelError(f"cam vit: input {tuple(x.shape[-2:])} is not divisible by the patch size {p}")
        t = self.patch_embed.proj(x)
        gh, gw = t.shape[-2:]
        t = t.flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], 1) + self._pos(gh, gw)
        rate = self.drop_path if adjust else 0.0
        attns = []
        for blk in self.blocks:
            t, a = blk(t, rate)
            attns.append(a)
        t = self.norm(t)
        return t[:, 1:].transpose(1, 2).reshape(t.shape[0], -1, gh, gw), attns


def _load_state(module: nn.Module, path: str, drop_prefixes: Sequence[str]) -> None:
    file = Path(path)
    if not file.is_file():
        raise ModelError(f"cam: weights file {file} not found (weights are never downloaded; give a local file)")
    state = torch.load(file, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    state = {k: v for k, v in state.items() if not k.startswith(tuple(drop_prefixes)) and not k.startswith("fc.")}
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ModelError(f"{file}: does not fit the backbone (missing {missing[:3]}, unexpected {unexpected[:3]})")


# --------------------------------------------------------------------------------------------
# the CAM classifier


class CAMNet(nn.Module):
    """Backbone + bias-free 1×1 classifier; ``forward`` → image logits ``(B, C)``.

    ``cam_logits(x)`` gives ``(B, C, h, w)`` class maps before ReLU, ``features(x)`` the feature map
    and attention list. ``pool``: ``gap`` (CAM baseline) or a float temperature τ for USAGE's
    softmax-weighted pooling.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, backbone_name: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Conv2d(backbone.out_dim, num_classes, 1, bias=False)
        self.num_classes = num_classes
        self.backbone_name = backbone_name
        self.stride = backbone.stride
        self.size_divisor = backbone.stride if backbone_name in VIT_BACKBONES else 1
        self.pool: str | float = "gap"

    @property
    def is_transformer(self) -> bool:
        return self.backbone_name in VIT_BACKBONES

    def features(self, x: torch.Tensor, adjust: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.backbone(x, adjust)

    def cam_logits(self, x: torch.Tensor, adjust: bool = False) -> torch.Tensor:
        return self.classifier(self.features(x, adjust)[0])

    def pool_logits(self, maps: torch.Tensor) -> torch.Tensor:
        if self.pool == "gap":
            return maps.mean((-2, -1))
        return temperature_pool(maps, float(self.pool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool_logits(self.cam_logits(x))


def build_backbone(backbone: str, in_chans: int = 3, **kwargs: Any) -> nn.Module:
    if backbone.startswith("resnet"):
        try:
            depth = int(backbone[len("resnet"):])
        except ValueError:
            known = ", ".join(CNN_BACKBONES + VIT_BACKBONES)
            raise ModelError(f"cam: unknown backbone '{backbone}' (known: {known})") from None
        return ResNetBackbone(depth, in_chans, **kwargs)
    if backbone == "simple":
        return SimpleCNN(in_chans, **kwargs)
    if backbone == "vit":
        return ViTBackbone(in_chans, **kwargs)
    raise ModelError(f"cam: unknown backbone '{backbone}' (known: {', '.join(CNN_BACKBONES + VIT_BACKBONES)})")


@register_model("cam", method="wsss", kind="dense")
def cam(in_chans: int = 3, num_classes: int = 20, backbone: str = "resnet50", **kwargs: Any) -> CAMNet:
    """Class activation map classifier (ResNet / ViT / simple CNN backbone, 1×1 classifier)."""
    try:
        body = build_backbone(backbone, in_chans, **kwargs)
    except TypeError as exc:
        raise ModelError(f"cam: bad backbone arguments for '{backbone}' ({exc})") from None
    return CAMNet(body, num_classes, backbone)


# --------------------------------------------------------------------------------------------
# inference


def temperature_pool(maps: torch.Tensor, tau: float) -> torch.Tensor:
    """``(B, C, h, w)`` class maps → ``(B, C)`` scores ``Σ_p softmax_p(M/τ) · M(p)``."""
    if tau <= 0:
        raise ConfigError(f"the pooling temperature (usage.tau) must be > 0, found {tau}")
    flat = maps.flatten(2)
    weights = torch.softmax(flat / tau, dim=-1)
    return (weights * flat).sum(-1)


def normalise_cams(cams: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """ReLU, then divide every ``(…, h, w)`` map by its spatial maximum (+``eps``) → values in [0, 1)."""
    cams = F.relu(cams)
    return cams / (cams.amax((-2, -1), keepdim=True) + eps)


def multiscale_cams(
    model: CAMNet, images: torch.Tensor, scales: Sequence[float] = (1.0, 0.5, 1.5, 2.0), flip: bool = True,
    size: tuple[int, int] | None = None, normalise: bool = True,
) -> torch.Tensor:
    """``(B, C, H, W)`` CAMs of ``images`` ``(B, 3, H, W)`` summed over scales and flips.

    Each scaled input is rounded to a multiple of the model's ``size_divisor``; the raw (pre-ReLU)
    maps are ReLU'd, resized bilinearly to ``size`` (default the input size) and summed, then
    normalised per class by the spatial max when ``normalise``.
    """
    h, w = images.shape[-2:]
    size = size or (h, w)
    d = max(1, model.size_divisor)
    total = None
    for s in scales:
        sh, sw = max(d, int(round(h * s / d)) * d), max(d, int(round(w * s / d)) * d)
        x = images if (sh, sw) == (h, w) else F.interpolate(images, size=(sh, sw), mode="bilinear",
                                                            align_corners=False)
        batch = torch.cat([x, x.flip(-1)]) if flip else x
        maps = F.relu(model.cam_logits(batch))
        if flip:
            maps = maps[: len(x)] + maps[len(x):].flip(-1)
        maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
        total = maps if total is None else total + maps
    return normalise_cams(total) if normalise else total


def class_scores(cams: torch.Tensor, labels: torch.Tensor, bg_threshold: float | None) -> torch.Tensor:
    """Per-pixel scores ``(B, K, H, W)``: CAMs of absent classes zeroed, background channel first.

    With ``bg_threshold`` the background score is that constant (K = C + 1, index 0 = background);
    without, K = C and absent classes get −1 so they never win the argmax.
    """
    present = labels[:, :, None, None] > 0
    if bg_threshold is None:
        return torch.where(present, cams, torch.full_like(cams, -1.0))
    fg = cams * present
    bg = torch.full_like(cams[:, :1], float(bg_threshold))
    return torch.cat([bg, fg], 1)


def cams_to_seeds(
    cams: torch.Tensor, labels: torch.Tensor, bg_threshold: float | None = 0.15, margin: float = 0.0,
    ignore_index: int = IGNORE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seed labels and confidence from normalised CAMs ``(B, C, H, W)`` and image labels ``(B, C)``.

    Returns ``(seeds (B, H, W) int64, confidence (B, H, W) float)``; see :func:`scores_to_seeds`.
    Seeds index the score channels of :func:`class_scores` (0 = background with ``bg_threshold``).
    """
    return scores_to_seeds(class_scores(cams, labels, bg_threshold), margin, ignore_index)


def scores_to_seeds(scores: torch.Tensor, margin: float = 0.0,
                    ignore_index: int = IGNORE) -> tuple[torch.Tensor, torch.Tensor]:
    """Argmax of ``(B, K, H, W)`` scores with a confidence map and an ignore value for uncertain pixels.

    ``confidence`` is the margin between the best and the second-best score, clipped to [0, 1]
    (1 where only one class competes, 0 where none does; absent classes, scored −1, do not compete);
    pixels whose margin is below ``margin`` become ``ignore_index``.
    """
    seeds = scores.argmax(1)
    if scores.shape[1] > 1:
        top = scores.topk(2, dim=1).values
        conf = (top[:, 0] - top[:, 1].clamp_min(0.0)).clamp(0.0, 1.0)
        competing = (scores > -0.5).sum(1)
        conf = torch.where(competing == 1, torch.ones_like(conf), conf)
        conf = torch.where(competing == 0, torch.zeros_like(conf), conf)
    else:
        conf = torch.ones_like(scores[:, 0])
    if margin > 0:
        seeds = torch.where(conf < margin, torch.full_like(seeds, ignore_index), seeds)
    return seeds, conf
