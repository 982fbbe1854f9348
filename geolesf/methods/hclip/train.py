"""Task ``hclip``: train, evaluate and predict with the H-CLIP open-vocabulary segmenter.

``geolesf train --config clip/hclip_vitb16_coco_stuff --set model.clip_checkpoint=PATH``
trains into ``cfg.out``: ``hclip.pt`` (format ``geolesf-hclip/1``), ``metrics.json``, ``config.yaml``.

The checkpoint stores the trainable tensors (rotation parameters, DCRC relations, positional
embeddings, head) plus the CLIP weight file's path and sha256; the frozen CLIP weights are re-read
(and verified) from that file when loading. Random-init (``model.tiny``/no checkpoint) runs store
the frozen CLIP tensors too, so their checkpoints are self-contained.

Training (methods.md §1.3, CAT-Seg protocol): short side resized to ``data.crop``, random
``crop×crop`` crops and horizontal flips, AdamW with the CLIP-side parameters at
``lr × clip_lr_multiplier``, linear warm-up then cosine decay, per-class BCE on one-hot targets
(CAT-Seg's loss; ``loss: ce`` for cross-entropy), plus ``text_he_reg_weight ×`` the text
hyperspherical-energy penalty.

Lightning runs :class:`HCLIPTask` on an :class:`HCLIPDataModule`, with the Trainer from
:func:`geolesf.training.make_trainer` (``trainer.logger`` / ``precision`` / ``callbacks`` / ``devices``
in the YAML reach it). The crops come from :mod:`geolesf.methods.hclip.data`. Benchmark evaluation is
:func:`geolesf.methods.hclip.evaluate.evaluate` and ``geolesf predict --classes`` goes through
:func:`geolesf.methods.hclip.inference.predict_model` (the entries of format ``geolesf-hclip/1`` in
:mod:`geolesf.formats`); neither imports this module.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

from geolesf.errors import ConfigError, ModelError, TrainingError
from geolesf.methods.hclip.checkpoint import save as save_hclip_checkpoint
from geolesf.methods.hclip.data import CropDataset
from geolesf.config import LightningOptions, run_config_class
from geolesf.io.atomic import write_json, write_yaml
from geolesf.training import make_trainer, start_run


@dataclass
class HCLIPModelConfig:
    clip_model: str = "ViT-B-16"
    clip_checkpoint: str | None = None
    clip_sha256: str | None = None
    tiny: bool = False
    quick_gelu: bool = True
    block_size: int = 32
    image_transform: str = "cayley"
    text_transform: str = "cayley"
    cross_modal: bool = True
    cross_layer: bool = True
    train_positional: bool = True
    templates: str = "single"
    hidden: int = 128
    guidance_dim: int = 128
    text_guidance_dim: int = 128
    agg_layers: int = 2
    heads: int = 4
    decoder_dims: list[int] = field(default_factory=lambda: [64, 32])
    decoder_guidance_dims: list[int] = field(default_factory=lambda: [256, 128])
    guidance_layers: list[int] | None = None


@dataclass
class HCLIPDataConfig:
    dataset: str = "coco_stuff"
    root: str = "$GEOLESF_DATA/coco_stuff"
    split: str | None = None
    crop: int = 384
    max_images: int | None = None


@dataclass
class HCLIPTrainerConfig(LightningOptions):
    """Lightning options (:class:`geolesf.config.LightningOptions`) + the optimisation schedule."""

    max_steps: int = 80000
    batch_size: int = 4
    lr: float = 2e-4
    clip_lr_multiplier: float = 0.075
    weight_decay: float = 1e-4
    warmup_steps: int = 1500
    loss: str = "bce"
    text_he_reg_weight: float = 0.0
    num_workers: int = 0


CONFIG = HCLIPConfig = run_config_class(
    "HCLIPConfig", task="hclip", out="runs/hclip", model=HCLIPModelConfig, data=HCLIPDataConfig,
    trainer=HCLIPTrainerConfig, module=__name__,
)


# --------------------------------------------------------------------------------------------
# model + checkpoint


def model_kwargs(m: HCLIPModelConfig) -> dict[str, Any]:
    kw = asdict(m)
    kw["decoder_dims"] = tuple(kw["decoder_dims"])
    kw["decoder_guidance_dims"] = tuple(kw["decoder_guidance_dims"])
    return kw


# --------------------------------------------------------------------------------------------
# loss


def segmentation_loss(logits: Any, target: Any, ignore: int, kind: str) -> Any:
    """CAT-Seg BCE on one-hot targets (``bce``) or cross-entropy (``ce``), ignoring ``ignore``."""
    if kind == "ce":
        return F.cross_entropy(logits, target, ignore_index=ignore)
    if kind != "bce":
        raise ConfigError(f"trainer.loss: expected bce or ce, found '{kind}'")
    valid = target != ignore
    c = logits.shape[1]
    onehot = F.one_hot(target.clamp(0, c - 1) * valid, c).permute(0, 3, 1, 2).to(logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none").mean(1)
    return loss[valid].mean() if valid.any() else logits.sum() * 0


# --------------------------------------------------------------------------------------------
# Lightning


class HCLIPTask(L.LightningModule):
    """Segmentation loss (+ the text hyperspherical-energy penalty) on ``model``'s logits for ``class_names``."""

    def __init__(self, model: Any, class_names: list[str], trainer: HCLIPTrainerConfig, ignore: int) -> None:
        super().__init__()
        self.model, self.class_names, self.t, self.ignore = model, list(class_names), trainer, int(ignore)
        self.history: list[dict[str, float]] = []

    def training_step(self, batch: Any, _: int) -> Any:
        images, masks = batch
        logits = self.model(self.model.normalise_uint8(images), self.class_names)
        loss = segmentation_loss(logits, masks, self.ignore, self.t.loss)
        if self.t.text_he_reg_weight > 0:
            loss = loss + self.t.text_he_reg_weight * self.model.text_energy_penalty()
        if not torch.isfinite(loss):
            raise TrainingError(f"hclip: non-finite loss at step {self.global_step}")
        self.log("train_loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(images))
        self.history.append({"step": int(self.global_step) + 1, "loss": float(loss.detach())})
        return loss

    def configure_optimizers(self) -> Any:
        t = self.t
        clip_side = [p for n, p in self.model.named_parameters() if p.requires_grad and not n.startswith("head.")]
        head = [p for p in self.model.head.parameters() if p.requires_grad]
        opt = torch.optim.AdamW([{"params": head, "lr": t.lr},
                                 {"params": clip_side, "lr": t.lr * t.clip_lr_multiplier}],
                                weight_decay=t.weight_decay)

        def schedule(step: int) -> float:
            if step < t.warmup_steps:
                return (step + 1) / max(1, t.warmup_steps)
            progress = (step - t.warmup_steps) / max(1, t.max_steps - t.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class HCLIPDataModule(L.LightningDataModule):
    """The training crops of a benchmark (``data.dataset`` under ``data.root``), opened when built.

    ``names`` are the prompt names of its classes and ``ignore_index`` its ignore label (the model and
    the loss need them before training).
    """

    def __init__(self, data: HCLIPDataConfig, trainer: HCLIPTrainerConfig) -> None:
        from geolesf.data.benchmarks.registry import open_benchmark, prompt_names

        super().__init__()
        self.trainer_cfg = trainer
        dataset = open_benchmark(data.dataset, data.root, data.split)
        self.names = prompt_names(dataset)
        self.ignore_index = int(dataset.ignore_index)
        self.train_set = CropDataset(dataset, data.crop, trainer.seed, data.max_images)

    def train_dataloader(self) -> DataLoader:
        t, n = self.trainer_cfg, len(self.train_set)
        return DataLoader(self.train_set, batch_size=t.batch_size, shuffle=True, num_workers=t.num_workers,
                          drop_last=n >= t.batch_size)


def run_config(cfg: HCLIPConfig) -> Path:
    """Train H-CLIP as configured; write ``hclip.pt``, ``metrics.json`` and ``config.yaml`` into ``cfg.out``."""
    from geolesf.registry import create_model

    if not cfg.data.root:
        raise ConfigError("data.root: expected the folder holding the training dataset")
    from geolesf.data.weights import resolve_spec

    clip_file = resolve_spec(cfg.model.clip_checkpoint, None, "model.clip_checkpoint")[0]  # weights:NAME → file
    if clip_file and not Path(clip_file).is_file():
        raise ModelError(f"model.clip_checkpoint {cfg.model.clip_checkpoint}: file not found (give a local "
                         "OpenAI-format CLIP state dict, e.g. ViT-B-16.pt)")
    out = start_run(cfg.out, cfg.trainer, record=cfg)
    datamodule = HCLIPDataModule(cfg.data, cfg.trainer)
    names = datamodule.names
    kwargs = model_kwargs(cfg.model)
    model = create_model("hclip", **kwargs)
    if cfg.data.crop % model.patch_size:
        raise ConfigError(f"data.crop {cfg.data.crop}: must be a multiple of the CLIP patch size {model.patch_size}")
    model.set_classes(names)
    task = HCLIPTask(model, names, cfg.trainer, datamodule.ignore_index)
    trainer = make_trainer(cfg.trainer, out, max_steps=cfg.trainer.max_steps, enable_progress_bar=True,
                           num_sanity_val_steps=0)
    model.train()
    start = time.perf_counter()
    trainer.fit(task, datamodule=datamodule)
    seconds = time.perf_counter() - start
    model.cpu().eval()
    digest = save_hclip_checkpoint(out / "hclip.pt", model, kwargs, names,
                                   extra={"dataset": cfg.data.dataset, "steps": cfg.trainer.max_steps})
    metrics = {"task": "hclip", "dataset": cfg.data.dataset, "images": len(datamodule.train_set),
               "classes": len(names), "steps": int(trainer.global_step), "seconds": round(seconds, 2),
               "final_loss": task.history[-1]["loss"] if task.history else None, "history": task.history,
               "parameters": model.parameter_report(), "checkpoint": "hclip.pt", "sha256": digest,
               "clip_sha256": model.clip_info.get("sha256")}
    write_json(out / "metrics.json", metrics)
    write_yaml(out / "config.yaml", cfg)
    return out
