"""Task ``sam-peft``: fine-tune SAM with SAM-PARSER, cross-block orchestration, LoRA or adapters.

``geolesf train --config sam/parser_vit_b_aerial --set model.checkpoint=sam_vit_b_01ec64.pth``

* ``data.mode: prompt`` — a GeoTIFF (``data.image``) and object footprints (``data.labels``, any
  vector format): box (or point) prompts per object, loss BCE + Dice on each object's mask
  (SAM-COBOT's ``ModelWithLoss``), metrics Dice and IoU per object on held-out rows;
* ``data.mode: semantic`` — image/label tiles (``data.images`` / ``data.masks``; ``data.class_names``
  maps label values to names): multi-class head on the mask decoder, cross-entropy, metrics mIoU
  (:class:`~geolesf.metrics.segmentation.SegmentationConfusion`) and mean Dice.

Training runs through Lightning (:class:`SamPeftModule` on a :class:`SamPeftDataModule`, the Trainer
from :func:`geolesf.training.make_trainer`, so ``trainer.logger`` / ``precision`` / ``callbacks`` in the
YAML reach it): Adam (SAM-COBOT: LR 1.5e-4, weight decay 5e-5, linear warm-up for ``warmup_epochs``),
only the PEFT tensors (and the decoder / band stem) receive gradients. The held-out set is scored
before and after fine-tuning with :mod:`geolesf.methods.sam.evaluate` (no Lightning there). The run folder gets ``peft.pt`` (format
``geolesf-sam-peft/1``: trainable tensors + base sha256), ``metrics.json`` (before/after
fine-tuning on the evaluation set), ``history.json`` and ``config.yaml``.
"""

from __future__ import annotations

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
from geolesf.methods.sam.evaluate import (dice_bce_loss, evaluate_prompts, evaluate_semantic, mask_scores,
                                          prompt_outputs)
from geolesf.config import LightningOptions, run_config_class
from geolesf.io.atomic import write_json, write_yaml
from geolesf.training import make_trainer, start_run

__all__ = ["CONFIG", "SamPeftConfig", "SamPeftDataModule", "SamPeftModule", "build_model", "dice_bce_loss",
           "evaluate_prompts", "evaluate_semantic", "mask_scores", "run_config"]

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
    """Method arguments: scope, ratio, host, rank, lora_init (official | zero_b), train_decoder, rgb_bands, shape."""


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
class SamTrainerConfig(LightningOptions):
    """Lightning options (:class:`geolesf.config.LightningOptions`, seed 42 here) + the fine-tuning schedule."""

    seed: int = 42
    epochs: int = 20
    steps_per_epoch: int = 50
    batch_size: int = 2
    lr: float = 1.5e-4
    weight_decay: float = 5e-5
    warmup_epochs: int = 1


CONFIG = SamPeftConfig = run_config_class(
    "SamPeftConfig", task="sam-peft", out="runs/sam_peft", model=SamModelConfig, data=SamDataConfig,
    trainer=SamTrainerConfig, module=__name__,
)


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
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=_batch_size(batch))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self.loss(batch), on_step=False, on_epoch=True, batch_size=_batch_size(batch))

    def configure_optimizers(self) -> Any:
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        warm = max(1, self.warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _batch_size(batch: Any) -> int:
    return len(batch["image"]) if isinstance(batch, dict) else len(batch[0])


class SamPeftDataModule(L.LightningDataModule):
    """The crops of a ``sam-peft`` config: prompted crops of one scene, or semantic tiles.

    The sets are read when the module is built (the model needs the band count and classes, and the
    held-out set is scored before training): ``data`` holds ``train``, ``val``, band limits ``lo`` /
    ``hi``, ``bands``, ``class_ids``, ``class_names``, the ``collate`` function and the ``source``.
    """

    def __init__(self, cfg: SamPeftConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.data = _prepare_data(cfg)

    def _loader(self, dataset: Any, batch_size: int) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=self.data["collate"])

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.data["train"], self.cfg.trainer.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.data["val"], 1)


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
# data, model, run


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


def _evaluate(model: Any, cfg: SamPeftConfig, data: dict[str, Any]) -> dict[str, Any]:
    if cfg.data.mode == "prompt":
        return evaluate_prompts(model, data["val"], cfg.data.prompt)
    return evaluate_semantic(model, data["val"], data["class_names"])


def _save(out: Path, cfg: SamPeftConfig, model: Any, args: dict[str, Any], data: dict[str, Any],
          trainable: int) -> str:
    from geolesf.colors import default_palette
    from geolesf.methods.sam.checkpoint import save as save_peft_checkpoint

    palette = default_palette(len(data["class_ids"]) + 1)
    colors = palette[1:] if cfg.data.mode == "semantic" else [palette[0]]
    return save_peft_checkpoint(
        out / "peft.pt", model, model_name=cfg.model.name, model_args=args, base_checkpoint=cfg.model.checkpoint,
        band_lo=data["lo"], band_hi=data["hi"], class_ids=data["class_ids"], class_names=data["class_names"],
        colors=colors, extra={"crop": int(data["train"].crop), "prompt": cfg.data.prompt,
                              "epochs": cfg.trainer.epochs, "trainable_parameters": int(trainable)})


def run_config(cfg: SamPeftConfig) -> Path:
    """Fine-tune into ``cfg.out``; returns the run folder."""
    tr = cfg.trainer
    out = start_run(cfg.out, tr, record=cfg)
    datamodule = SamPeftDataModule(cfg)
    data = datamodule.data
    n_classes = len(data["class_ids"]) if cfg.data.mode == "semantic" else 1
    model, args = build_model(cfg, data["bands"], n_classes)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    encoder_total = sum(p.numel() for p in model.sam.image_encoder.parameters())

    use_cuda = tr.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    model.to("cuda" if use_cuda else "cpu")
    before = _evaluate(model, cfg, data)
    module = SamPeftModule(model, cfg.data.mode, cfg.data.prompt, tr.lr, tr.weight_decay,
                           warmup_steps=tr.warmup_epochs * tr.steps_per_epoch)
    history = _History()
    trainer = make_trainer(tr, out, callbacks=[history], max_epochs=tr.epochs, num_sanity_val_steps=0,
                           limit_val_batches=0)
    start = time.perf_counter()
    model.train()
    trainer.fit(module, datamodule=datamodule)
    seconds = time.perf_counter() - start
    model = module.model.eval()
    after = _evaluate(model, cfg, data)
    model.cpu()
    digest = _save(out, cfg, model, args, data, trainable)
    metrics = {
        "task": "sam-peft", "model": cfg.model.name, "mode": cfg.data.mode, "method": model.info,
        "trainable_parameters": int(trainable), "image_encoder_parameters": int(encoder_total),
        "before": before, "after": after, "train_seconds": round(seconds, 2), "data": data["source"],
        "checkpoint": {"path": "peft.pt", "sha256": digest, "bytes": (out / "peft.pt").stat().st_size,
                       "base_sha256": model.base_sha256},
    }
    write_json(out / "metrics.json", metrics)
    write_json(out / "history.json", history.rows)
    write_yaml(out / "config.yaml", cfg)
    key = "dice" if cfg.data.mode == "prompt" else "mIoU"
    print(f"[{cfg.model.name}] {trainable:,} trainable parameters; {key} {before.get(key) or 0:.4f} → "
          f"{after.get(key) or 0:.4f}; wrote {out / 'peft.pt'} (sha256 {digest[:12]}…)")
    return out
