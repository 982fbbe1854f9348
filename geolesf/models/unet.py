"""``unet``: a fast dense baseline segmenter, its checkpoint format and a small trainer.

Two back ends behind one registry name:

* the default compact U-Net written here (``base`` channels, ``depth`` poolings, BatchNorm,
  bilinear up-sampling) — about 0.1–2 M parameters, quick on a CPU, no downloads;
* ``encoder="resnet18"`` (any segmentation_models_pytorch encoder) builds ``smp.Unet`` with
  random encoder weights (never downloads), for users who want the standard architecture.

Dense models map ``(B, bands, H, W)`` to ``(B, classes, H, W)`` logits; ``size_divisor`` tells
the tiled predictor which tile sizes the model accepts.

Checkpoints (``geolesf-segmentation/1``) are plain dicts of tensors and primitives, loadable with
``torch.load(weights_only=True)``: state dict, model name and arguments, per-band mean/std,
class ids, names and colours.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from geolesf import __version__
from geolesf.errors import DataError, ModelError
from geolesf.registry import register_model, write_checkpoint

SEGMENTATION_FORMAT = "geolesf-segmentation/1"


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class CompactUNet(nn.Module):
    """U-Net with ``depth`` poolings; channel widths ``base·2^k``."""

    def __init__(self, in_chans: int, num_classes: int, base: int = 16, depth: int = 3) -> None:
        super().__init__()
        if in_chans < 1 or num_classes < 1 or base < 1 or depth < 0:
            raise ModelError(f"unet: bad arguments in_chans={in_chans} num_classes={num_classes} "
                             f"base={base} depth={depth}")
        widths = [base * 2**k for k in range(depth + 1)]
        self.enc = nn.ModuleList([_block(in_chans, widths[0])])
        self.enc.extend(_block(widths[k - 1], widths[k]) for k in range(1, depth + 1))
        self.dec = nn.ModuleList(_block(widths[k + 1] + widths[k], widths[k]) for k in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.size_divisor = 2**depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for k, block in enumerate(self.enc):
            if k:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()
        for block in self.dec:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return self.head(x)


@register_model("unet", task="segmentation")
def unet(in_chans: int = 3, num_classes: int = 2, base: int = 16, depth: int = 3,
         encoder: str | None = None) -> nn.Module:
    """Dense U-Net segmenter (compact built-in, or smp.Unet with ``encoder=``), logits (B, C, H, W)."""
    if encoder is None:
        return CompactUNet(in_chans, num_classes, base=base, depth=depth)
    import segmentation_models_pytorch as smp

    model = smp.Unet(encoder_name=encoder, encoder_weights=None, in_channels=in_chans, classes=num_classes)
    model.size_divisor = 32
    return model


# --------------------------------------------------------------------------------------------
# checkpoint


@dataclass
class SegmentationCheckpoint:
    """A dense model plus what is needed to apply it to a new scene."""

    model: nn.Module
    model_name: str
    model_args: dict[str, Any]
    band_mean: np.ndarray | None
    band_std: np.ndarray | None
    class_ids: list[int]
    class_names: list[str]
    colors: list[Any]
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    sha256: str | None = None

    @property
    def in_bands(self) -> int:
        return int(self.model_args.get("in_chans", len(self.band_mean) if self.band_mean is not None else 0))

    def normalise(self, x: np.ndarray) -> np.ndarray:
        """``(bands, h, w)`` raw values → float32 model input."""
        x = np.asarray(x, dtype=np.float32)
        if self.band_mean is not None:
            x = (x - self.band_mean[:, None, None]) / self.band_std[:, None, None]
        return x


def save_segmentation_checkpoint(path: str | Path, ckpt: SegmentationCheckpoint) -> str:
    """Write a ``weights_only``-loadable checkpoint atomically; returns its sha256."""

    def arr(a: np.ndarray | None) -> torch.Tensor | None:
        return None if a is None else torch.from_numpy(np.asarray(a, dtype=np.float32))

    payload = {
        "format": SEGMENTATION_FORMAT,
        "geolesf_version": __version__,
        "model_name": ckpt.model_name,
        "model_args": dict(ckpt.model_args),
        "state_dict": {k: v.detach().cpu() for k, v in ckpt.model.state_dict().items()},
        "band_mean": arr(ckpt.band_mean),
        "band_std": arr(ckpt.band_std),
        "class_ids": [int(c) for c in ckpt.class_ids],
        "class_names": [str(n) for n in ckpt.class_names],
        "colors": [_colour_hex(c) for c in ckpt.colors],
        "extra": dict(ckpt.extra),
    }
    return write_checkpoint(path, payload)


def _colour_hex(c: Any) -> str:
    if isinstance(c, str):
        return c
    r, g, b = (int(v) for v in tuple(c)[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def read_checkpoint_payload(path: str | Path) -> tuple[dict[str, Any], str]:
    """``torch.load(weights_only=True)`` with geolesf errors; returns ``(payload, sha256)``."""
    from geolesf.registry import read_checkpoint

    payload, digest, _ = read_checkpoint(path)
    return payload, digest


def load_segmentation_checkpoint(path: str | Path) -> SegmentationCheckpoint:
    """Load a ``geolesf-segmentation/1`` checkpoint and rebuild its model (eval mode)."""
    from geolesf.registry import create_model

    payload, digest = read_checkpoint_payload(path)
    if payload.get("format") != SEGMENTATION_FORMAT:
        raise ModelError(f"{path}: expected a '{SEGMENTATION_FORMAT}' checkpoint, found "
                         f"'{payload.get('format', 'unknown')}'")
    model = create_model(payload["model_name"], **payload["model_args"])
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    if missing or unexpected:
        raise ModelError(f"{path}: state dict does not match model '{payload['model_name']}' "
                         f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
    model.eval()

    def arr(t: torch.Tensor | None) -> np.ndarray | None:
        return None if t is None else t.numpy().astype(np.float32)

    return SegmentationCheckpoint(
        model=model, model_name=payload["model_name"], model_args=payload["model_args"],
        band_mean=arr(payload["band_mean"]), band_std=arr(payload["band_std"]),
        class_ids=list(payload["class_ids"]), class_names=list(payload["class_names"]),
        colors=list(payload["colors"]), extra=dict(payload.get("extra", {})),
        path=Path(path), sha256=digest,
    )


# --------------------------------------------------------------------------------------------
# training


def _read_pair(image_tif: str | Path, label_tif: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    import rasterio

    for p in (image_tif, label_tif):
        if not Path(p).is_file():
            raise DataError(f"{p}: file not found")
    with rasterio.open(image_tif) as src:
        image = src.read().astype(np.float32)
        valid = src.dataset_mask() > 0
    with rasterio.open(label_tif) as lab:
        labels = lab.read(1)
        label_nodata = lab.nodata
    if image.shape[1:] != labels.shape:
        raise DataError(f"{label_tif} is {labels.shape[1]}×{labels.shape[0]} px; "
                        f"{image_tif} is {image.shape[2]}×{image.shape[1]}")
    return image, labels, valid, label_nodata


def train_segmenter(
    image_tif: str | Path,
    label_tif: str | Path,
    out: str | Path,
    *,
    class_names: dict[int, str] | None = None,
    colors: dict[int, Any] | None = None,
    ignore_value: int | None = None,
    model_args: dict[str, Any] | None = None,
    epochs: int = 10,
    steps_per_epoch: int = 20,
    chip: int = 128,
    batch_size: int = 8,
    lr: float = 2e-3,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """Train ``unet`` on random chips of one image/label GeoTIFF pair; write a checkpoint.

    ``ignore_value`` (default: the label raster's nodata) marks unlabelled pixels; image
    nodata pixels are ignored too. Class ids are the remaining label values. Returns a summary
    dict with the checkpoint path, its sha256 and the loss history.
    """
    from geolesf.io.writers import default_palette

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    image, labels, valid, label_nodata = _read_pair(image_tif, label_tif)
    ignore = label_nodata if ignore_value is None else ignore_value
    usable = valid & (labels != ignore) if ignore is not None else valid
    class_ids = [int(v) for v in np.unique(labels[usable])]
    if len(class_ids) < 2:
        raise DataError(f"{label_tif}: need at least 2 classes to train, found {class_ids}")
    lut = np.full(int(labels.max()) + 1, -100, dtype=np.int64)
    lut[class_ids] = np.arange(len(class_ids))
    target = np.where(usable, lut[labels], -100)
    pix = image[:, valid]
    mean, std = pix.mean(axis=1), pix.std(axis=1) + 1e-6
    x_all = (image - mean[:, None, None]) / std[:, None, None]
    x_all[:, ~valid] = 0.0
    bands, h, w = image.shape
    c = min(chip, h, w)
    args = {"in_chans": bands, "num_classes": len(class_ids), "base": 16, "depth": 3, **(model_args or {})}
    model = unet(**args).to(device)
    div = getattr(model, "size_divisor", 1)
    c = max(div, c - c % div)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    start = time.perf_counter()
    from tqdm.auto import tqdm

    model.train()
    bar = tqdm(range(epochs), desc="train unet", unit="epoch", dynamic_ncols=True)
    for epoch in bar:
        total = 0.0
        for _ in range(steps_per_epoch):
            ys = rng.integers(0, h - c + 1, batch_size)
            xs = rng.integers(0, w - c + 1, batch_size)
            xb = torch.from_numpy(np.stack([x_all[:, y:y + c, x:x + c] for y, x in zip(ys, xs)])).to(device)
            yb = torch.from_numpy(np.stack([target[y:y + c, x:x + c] for y, x in zip(ys, xs)])).to(device)
            if (yb == -100).all():
                continue
            loss = F.cross_entropy(model(xb), yb, ignore_index=-100)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        history.append({"epoch": epoch + 1, "loss": total / steps_per_epoch})
        bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
    model.eval()
    names = class_names or {}
    palette = default_palette(len(class_ids))
    cols = colors or {}
    ckpt = SegmentationCheckpoint(
        model=model.cpu(), model_name="unet", model_args=args, band_mean=mean, band_std=std,
        class_ids=class_ids, class_names=[names.get(i, f"class {i}") for i in class_ids],
        colors=[cols.get(i, palette[k]) for k, i in enumerate(class_ids)],
        extra={"trained_on": Path(image_tif).name, "labels": Path(label_tif).name, "epochs": epochs,
               "chip": c, "seconds": round(time.perf_counter() - start, 2)},
    )
    digest = save_segmentation_checkpoint(out, ckpt)
    return {"checkpoint": Path(out), "sha256": digest, "history": history, "class_ids": class_ids}
