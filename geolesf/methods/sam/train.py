"""Task ``sam-peft``: fine-tune SAM with SAM-PARSER, cross-block orchestration, LoRA or adapters.

``geolesf train --config configs/sam/parser_vit_b_aerial.yaml --set model.checkpoint=sam_vit_b_01ec64.pth``

* ``data.mode: prompt`` — a GeoTIFF (``data.image``) and object footprints (``data.labels``, any
  vector format): box (or point) prompts per object, loss BCE + Dice on each object's mask
  (SAM-COBOT's ``ModelWithLoss``), metrics Dice and IoU per object on held-out rows;
* ``data.mode: semantic`` — image/label tiles (``data.images`` / ``data.masks``; ``data.class_names``
  maps label values to names): multi-class head on the mask decoder, cross-entropy, metrics mIoU
  (:class:`~geolesf.metrics.segmentation.SegmentationConfusion`) and mean Dice.

Training runs through Lightning (like :mod:`geolesf.methods.hsi.patch_training`): Adam (SAM-COBOT:
LR 1.5e-4, weight decay 5e-5, linear warm-up for ``warmup_epochs``), only the PEFT tensors (and
the decoder / band stem) receive gradients. The run folder gets ``peft.pt`` (format
``geolesf-sam-peft/1``: trainable tensors + base sha256), ``metrics.json`` (before/after
fine-tuning on the evaluation set), ``history.json`` and ``config.yaml``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

from geolesf.errors import ConfigError, TrainingError

MODEL_NAMES = ("sam-parser", "sam-cobo", "sam-lora", "sam-adapter")


@dataclass
class SamModelConfig:
    name: str = "sam-parser"
    """sam-parser | sam-cobo | sam-lora | sam-adapter."""
    variant: str = "vit_b"
    """vit_b | vit_l | vit_h (official shapes) | tiny (tests)."""
    checkpoint: str | None = None
    """Local official SAM checkpoint (e.g. sam_vit_b_01ec64.pth); required."""
    checkpoint_sha256: str | None = None
    """Optional expected sha256 of ``checkpoint``."""
    args: dict[str, Any] = field(default_factory=dict)
    """Method arguments: scope, ratio, host, rank, train_decoder, rgb_bands, shape."""


@dataclass
class SamDataConfig:
    mode: str = "prompt"
    """prompt (vector footprints → box/point prompts) | semantic (label tiles)."""
    image: str | None = None
    labels: str | None = None
    prompt: str = "box"
    """box | point."""
    box_jitter: int = 20
    max_objects: int = 16
    min_object_pixels: int = 16
    val_fraction: float = 0.25
    """prompt mode: bottom fraction of the rows held out for evaluation."""
    class_name: str = "object"
    images: list[str] = field(default_factory=list)
    masks: list[str] = field(default_factory=list)
    val_images: list[str] = field(default_factory=list)
    val_masks: list[str] = field(default_factory=list)
    class_names: dict[int, str] | None = None
    """semantic mode: label value → name; other values are ignored."""
    crop: int = 1024
    """Side of the training crops in raster pixels (resized to SAM's input size)."""


@dataclass
class SamTrainerConfig:
    epochs: int = 20
    steps_per_epoch: int = 50
    batch_size: int = 2
    lr: float = 1.5e-4
    weight_decay: float = 5e-5
    warmup_epochs: int = 1
    seed: int = 42
    accelerator: str = "auto"
    devices: Any = 1
    num_threads: int | None = None


@dataclass
class SamPeftConfig:
    task: str = "sam-peft"
    out: str = "runs/sam_peft"
    model: SamModelConfig = field(default_factory=SamModelConfig)
    data: SamDataConfig = field(default_factory=SamDataConfig)
    trainer: SamTrainerConfig = field(default_factory=SamTrainerConfig)


CONFIG = SamPeftConfig


# --------------------------------------------------------------------------------------------
# losses and metrics


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits + soft Dice, averaged over masks (``(N, H, W)`` each)."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = logits.sigmoid().flatten(1)
    t = target.flatten(1)
    dice = 1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)
    return bce + dice.mean()


def mask_scores(logits: torch.Tensor, target: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-mask Dice ``2|P∩G|/(|P|+|G|)`` and IoU of ``logits > 0`` against ``target``."""
    p = (logits > 0).flatten(1).float()
    t = (target > 0.5).flatten(1).float()
    inter, ps, ts = (p * t).sum(1), p.sum(1), t.sum(1)
    dice = torch.where(ps + ts > 0, 2 * inter / (ps + ts).clamp(min=1), torch.ones_like(inter))
    iou = torch.where(ps + ts - inter > 0, inter / (ps + ts - inter).clamp(min=1), torch.ones_like(inter))
    return dice.tolist(), iou.tolist()


def prompt_outputs(model: Any, batch: dict[str, Any], prompt: str) -> list[torch.Tensor]:
    if prompt == "box":
        return model.forward_prompted(batch["image"], boxes=batch["boxes"])
    return model.forward_prompted(batch["image"], points=list(zip(batch["points"], batch["point_labels"])))


# --------------------------------------------------------------------------------------------
# Lightning module


class SamPeftModule(L.LightningModule):
    """Thin wrapper: prompted (BCE + Dice per object) or semantic (cross-entropy) fine-tuning."""

    def __init__(self, model: Any, mode: str, prompt: str = "box", lr: float = 1.5e-4,
                 weight_decay: float = 5e-5, warmup_steps: int = 0) -> None:
        super().__init__()
        self.model = model
        self.mode, self.prompt = mode, prompt
        self.lr, self.weight_decay, self.warmup_steps = lr, weight_decay, warmup_steps

    def loss(self, batch: Any) -> torch.Tensor:
        if self.mode == "prompt":
            outs = prompt_outputs(self.model, batch, self.prompt)
            logits = torch.cat([o[:, 0] for o in outs])
            return dice_bce_loss(logits, torch.cat(batch["masks"]))
        x, y = batch
        return F.cross_entropy(self.model(x), y, ignore_index=-100)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        if not torch.isfinite(loss):
            raise TrainingError(f"training loss became {loss.item()} at epoch {self.current_epoch}, batch "
                                f"{batch_idx}; lower trainer.lr")
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=len(batch["image"]) if isinstance(batch, dict) else len(batch[0]))
        return loss

    def configure_optimizers(self) -> Any:
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        warm = max(1, self.warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class _History(L.Callback):
    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        for loader in (trainer.train_dataloader,):
            ds = getattr(loader, "dataset", None)
            if ds is not None and hasattr(ds, "epoch"):
                ds.epoch = trainer.current_epoch

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        m = trainer.callback_metrics
        self.rows.append({"epoch": trainer.current_epoch + 1, "train_loss": float(m.get("train_loss", np.nan))})


# --------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def evaluate_prompts(model: Any, dataset: Any, prompt: str = "box") -> dict[str, Any]:
    """Mean loss, Dice and IoU over every object of an evaluation :class:`PromptCrops`."""
    from tqdm.auto import tqdm

    from geolesf.methods.sam.data import collate_prompts

    model.eval()
    device = next(model.parameters()).device
    dices, ious, losses = [], [], []
    for i in tqdm(range(len(dataset)), desc="evaluate", unit="crop", leave=False):
        item = {k: v.to(device) for k, v in dataset[i].items()}
        batch = collate_prompts([item])
        logits = prompt_outputs(model, batch, prompt)[0][:, 0].cpu()
        target = batch["masks"][0].cpu()
        losses.append(float(dice_bce_loss(logits, target)) * len(target))
        d, u = mask_scores(logits, target)
        dices += d
        ious += u
    n = max(len(dices), 1)
    return {"loss": sum(losses) / n, "dice": float(np.mean(dices)), "iou": float(np.mean(ious)),
            "objects": len(dices), "crops": len(dataset)}


@torch.no_grad()
def evaluate_semantic(model: Any, dataset: Any, class_names: list[str]) -> dict[str, Any]:
    """Cross-entropy, mIoU and mean Dice (from one confusion matrix) over an evaluation set."""
    from geolesf.metrics.segmentation import SegmentationConfusion

    from tqdm.auto import tqdm

    model.eval()
    conf = SegmentationConfusion(len(class_names), ignore_index=-100)
    total, n = 0.0, 0
    device = next(model.parameters()).device
    for i in tqdm(range(len(dataset)), desc="evaluate", unit="crop", leave=False):
        x, y = dataset[i]
        logits = model(x[None].to(device)).cpu()
        total += float(F.cross_entropy(logits, y[None], ignore_index=-100))
        n += 1
        conf.update(y.numpy(), logits.argmax(1)[0].numpy())
    m = conf.compute(class_names)
    cm = conf.matrix.astype(np.float64)
    tp, denom = np.diag(cm), cm.sum(0) + cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(denom > 0, 2 * tp / denom, np.nan)
    m.update(loss=total / max(n, 1), mean_dice=float(np.nanmean(dice)) if np.isfinite(dice).any() else None,
             per_class_dice={c: (None if not np.isfinite(v) else float(v)) for c, v in zip(class_names, dice)})
    return m


# --------------------------------------------------------------------------------------------
# run


def _prepare_data(cfg: SamPeftConfig) -> dict[str, Any]:
    from geolesf.methods.sam.stem import band_limits, scale_to_255
    from geolesf.methods.sam import data as sd

    d, tr = cfg.data, cfg.trainer
    samples = tr.steps_per_epoch * tr.batch_size
    if d.mode == "prompt":
        if d.prompt not in ("box", "point"):
            raise ConfigError(f"data.prompt must be 'box' or 'point', found '{d.prompt}'")
        if not 0 < d.val_fraction < 1:
            raise ConfigError(f"data.val_fraction must be in (0, 1), found {d.val_fraction}")
        scene = sd.read_prompt_scene(d.image, d.labels)
        h = scene.instances.shape[0]
        split = int(round(h * (1 - d.val_fraction)))
        lo, hi = band_limits(scene.image[:, :split], scene.valid[:split])
        scaled = scale_to_255(scene.image, lo, hi)
        kw = dict(max_objects=d.max_objects, min_pixels=d.min_object_pixels)
        train = sd.PromptCrops(scene, scaled, (0, split), d.crop, samples=samples, seed=tr.seed,
                               jitter=d.box_jitter, **kw)
        val = sd.PromptCrops(scene, scaled, (split, h), d.crop, train=False, **kw)
        return {"train": train, "val": val, "lo": lo, "hi": hi, "bands": scene.image.shape[0],
                "class_ids": [1], "class_names": [d.class_name], "collate": sd.collate_prompts,
                "source": {"image": str(d.image), "labels": str(d.labels), "objects": scene.n_objects,
                           "train_rows": [0, split], "val_rows": [split, h]}}
    if d.mode != "semantic":
        raise ConfigError(f"data.mode must be 'prompt' or 'semantic', found '{d.mode}'")
    if not d.images or len(d.images) != len(d.masks):
        raise ConfigError(f"data.images / data.masks: need the same non-zero number of files, found "
                          f"{len(d.images)} / {len(d.masks)}")
    if not d.class_names or len(d.class_names) < 2:
        raise ConfigError("data.class_names: semantic mode needs a mapping of at least 2 label values to names")
    class_ids = sorted(int(k) for k in d.class_names)
    imgs = [sd.read_tile(p) for p in d.images]
    labs = [sd.read_tile(p)[0] for p in d.masks]
    for p, a, b in zip(d.images, imgs, labs):
        if a.shape[1:] != b.shape:
            raise ConfigError(f"{p}: image is {a.shape[2]}×{a.shape[1]} px, its mask {b.shape[1]}×{b.shape[0]}")
    lo, hi = band_limits(np.concatenate([a.reshape(a.shape[0], -1) for a in imgs], 1)[:, :, None])
    scaled = [scale_to_255(a, lo, hi) for a in imgs]
    targets = [sd.label_lut(b, class_ids) for b in labs]
    val_imgs = [scale_to_255(sd.read_tile(p), lo, hi) for p in d.val_images] or scaled
    val_tgts = [sd.label_lut(sd.read_tile(p)[0], class_ids) for p in d.val_masks] or targets
    return {"train": sd.SemanticCrops(scaled, targets, d.crop, samples=samples, seed=tr.seed),
            "val": sd.SemanticCrops(val_imgs, val_tgts, d.crop, train=False), "lo": lo, "hi": hi,
            "bands": imgs[0].shape[0], "class_ids": class_ids,
            "class_names": [d.class_names[i] for i in class_ids], "collate": None,
            "source": {"images": list(d.images), "masks": list(d.masks), "val_images": list(d.val_images)}}


def build_model(cfg: SamPeftConfig, bands: int, num_classes: int) -> Any:
    from geolesf.registry import create_model

    m = cfg.model
    if m.name not in MODEL_NAMES:
        raise ConfigError(f"model.name must be one of {', '.join(MODEL_NAMES)}, found '{m.name}'")
    if not m.checkpoint:
        raise ConfigError("model.checkpoint: a local SAM checkpoint is required (e.g. --set "
                          "model.checkpoint=sam_vit_b_01ec64.pth); PEFT trains on top of pretrained weights")
    args = dict(m.args or {})
    args.update(variant=m.variant, mode=cfg.data.mode, num_classes=num_classes, in_bands=bands)
    return create_model(m.name, checkpoint=m.checkpoint, checkpoint_sha256=m.checkpoint_sha256, **args), args


def run_config(cfg: SamPeftConfig) -> Path:
    """Fine-tune into ``cfg.out``; returns the run folder."""
    import yaml

    from geolesf.config import to_dict
    from geolesf.colors import default_palette
    from geolesf.io.atomic import atomic_path
    from geolesf.methods.sam.checkpoint import save_peft_checkpoint

    tr = cfg.trainer
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(tr.seed, workers=True, verbose=False)
    if tr.num_threads:
        torch.set_num_threads(int(tr.num_threads))
    data = _prepare_data(cfg)
    n_classes = len(data["class_ids"]) if cfg.data.mode == "semantic" else 1
    model, args = build_model(cfg, data["bands"], n_classes)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    encoder_total = sum(p.numel() for p in model.sam.image_encoder.parameters())

    use_cuda = tr.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    model.to("cuda" if use_cuda else "cpu")

    def evaluate() -> dict[str, Any]:
        if cfg.data.mode == "prompt":
            return evaluate_prompts(model, data["val"], cfg.data.prompt)
        return evaluate_semantic(model, data["val"], data["class_names"])

    before = evaluate()
    loader = DataLoader(data["train"], batch_size=tr.batch_size, shuffle=False, collate_fn=data["collate"])
    module = SamPeftModule(model, cfg.data.mode, cfg.data.prompt, tr.lr, tr.weight_decay,
                           warmup_steps=tr.warmup_epochs * tr.steps_per_epoch)
    history = _History()
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    trainer = L.Trainer(max_epochs=tr.epochs, accelerator=tr.accelerator, devices=tr.devices, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, callbacks=[history],
                        num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=str(out))
    start = time.perf_counter()
    model.train()
    trainer.fit(module, loader)
    seconds = time.perf_counter() - start
    model = module.model.eval()
    after = evaluate()
    model.cpu()
    palette = default_palette(len(data["class_ids"]) + 1)
    colors = palette[1:] if cfg.data.mode == "semantic" else [palette[0]]
    digest = save_peft_checkpoint(
        out / "peft.pt", model, model_name=cfg.model.name, model_args=args, base_checkpoint=cfg.model.checkpoint,
        band_lo=data["lo"], band_hi=data["hi"], class_ids=data["class_ids"], class_names=data["class_names"],
        colors=colors, extra={"crop": int(data["train"].crop), "prompt": cfg.data.prompt, "epochs": tr.epochs,
                              "trainable_parameters": int(trainable)})
    metrics = {
        "task": "sam-peft", "model": cfg.model.name, "mode": cfg.data.mode, "method": model.info,
        "trainable_parameters": int(trainable), "image_encoder_parameters": int(encoder_total),
        "before": before, "after": after, "train_seconds": round(seconds, 2), "data": data["source"],
        "checkpoint": {"path": "peft.pt", "sha256": digest, "bytes": (out / "peft.pt").stat().st_size,
                       "base_sha256": model.base_sha256},
    }
    for name, text in (("metrics.json", json.dumps(metrics, indent=1, default=str) + "\n"),
                       ("history.json", json.dumps(history.rows, indent=1) + "\n"),
                       ("config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))):
        with atomic_path(out / name) as tmp:
            tmp.write_text(text)
    key = "dice" if cfg.data.mode == "prompt" else "mIoU"
    print(f"[{cfg.model.name}] {trainable:,} trainable parameters; {key} {before.get(key) or 0:.4f} → "
          f"{after.get(key) or 0:.4f}; wrote {out / 'peft.pt'} (sha256 {digest[:12]}…)")
    return out
