"""Task ``hclip``: train, evaluate and predict with the H-CLIP open-vocabulary segmenter.

``geolesf train --config configs/clip/hclip_vitb16_coco_stuff.yaml --set model.clip_checkpoint=PATH``
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

Evaluation on benchmarks lives in :mod:`geolesf.methods.hclip.evaluate`; :func:`load_for_predict` is
the ``PREDICT_LOADERS`` entry used by ``geolesf predict --classes``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.errors import ConfigError, ModelError, TrainingError

from geolesf.methods.hclip.checkpoint import save as save_hclip_checkpoint


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
class HCLIPTrainerConfig:
    max_steps: int = 80000
    batch_size: int = 4
    lr: float = 2e-4
    clip_lr_multiplier: float = 0.075
    weight_decay: float = 1e-4
    warmup_steps: int = 1500
    loss: str = "bce"
    text_he_reg_weight: float = 0.0
    seed: int = 0
    accelerator: str = "auto"
    num_workers: int = 0


@dataclass
class HCLIPConfig:
    task: str = "hclip"
    out: str = "runs/hclip"
    model: HCLIPModelConfig = field(default_factory=HCLIPModelConfig)
    data: HCLIPDataConfig = field(default_factory=HCLIPDataConfig)
    trainer: HCLIPTrainerConfig = field(default_factory=HCLIPTrainerConfig)


CONFIG = HCLIPConfig


# --------------------------------------------------------------------------------------------
# model + checkpoint


def model_kwargs(m: HCLIPModelConfig) -> dict[str, Any]:
    from dataclasses import asdict

    kw = asdict(m)
    kw["decoder_dims"] = tuple(kw["decoder_dims"])
    kw["decoder_guidance_dims"] = tuple(kw["decoder_guidance_dims"])
    return kw


# --------------------------------------------------------------------------------------------
# data


def _resize_short(image: np.ndarray, mask: np.ndarray | None, short: int) -> tuple[np.ndarray, np.ndarray | None]:
    import cv2

    h, w = image.shape[:2]
    s = short / min(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    img = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    m = None if mask is None else cv2.resize(mask.astype(np.int32), size, interpolation=cv2.INTER_NEAREST)
    return img, None if m is None else m.astype(np.int64)


class CropDataset:
    """Training view of a benchmark: resize, random crop, flip; tensors (3, c, c) uint8 and (c, c) int64."""

    def __init__(self, dataset: Any, crop: int, seed: int = 0, max_images: int | None = None) -> None:
        self.ds, self.crop, self.seed = dataset, crop, seed
        self.n = len(dataset) if max_images is None else min(len(dataset), max_images)
        self.ignore = int(dataset.ignore_index)
        self.calls = 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        import torch

        rng = np.random.default_rng((self.seed, i, self.calls))
        self.calls += 1
        s = self.ds[i]
        img, mask = _resize_short(s["image"], s["mask"], self.crop)
        h, w = mask.shape
        y = int(rng.integers(0, h - self.crop + 1))
        x = int(rng.integers(0, w - self.crop + 1))
        img, mask = img[y:y + self.crop, x:x + self.crop], mask[y:y + self.crop, x:x + self.crop]
        if rng.random() < 0.5:
            img, mask = img[:, ::-1], mask[:, ::-1]
        return (torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))),
                torch.from_numpy(np.ascontiguousarray(mask)))


def segmentation_loss(logits: Any, target: Any, ignore: int, kind: str) -> Any:
    """CAT-Seg BCE on one-hot targets (``bce``) or cross-entropy (``ce``), ignoring ``ignore``."""
    from torch.nn import functional as F

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
# training


def _lightning_module(model: Any, class_names: list[str], cfg: HCLIPConfig, ignore: int) -> Any:
    import lightning as L
    import torch

    t = cfg.trainer

    class HCLIPTask(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.history: list[dict[str, float]] = []

        def training_step(self, batch: Any, _: int) -> Any:
            images, masks = batch
            logits = self.model(self.model.normalise_uint8(images), class_names)
            loss = segmentation_loss(logits, masks, ignore, t.loss)
            if t.text_he_reg_weight > 0:
                loss = loss + t.text_he_reg_weight * self.model.text_energy_penalty()
            if not torch.isfinite(loss):
                raise TrainingError(f"hclip: non-finite loss at step {self.global_step}")
            self.history.append({"step": int(self.global_step) + 1, "loss": float(loss.detach())})
            return loss

        def configure_optimizers(self) -> Any:
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

    return HCLIPTask()


def run_config(cfg: HCLIPConfig) -> Path:
    """Train H-CLIP as configured; write ``hclip.pt``, ``metrics.json`` and ``config.yaml`` into ``cfg.out``."""
    if not cfg.data.root:
        raise ConfigError("data.root: expected the folder holding the training dataset")
    if cfg.model.clip_checkpoint and not Path(cfg.model.clip_checkpoint).is_file():
        raise ModelError(f"model.clip_checkpoint {cfg.model.clip_checkpoint}: file not found (give a local "
                         "OpenAI-format CLIP state dict, e.g. ViT-B-16.pt)")
    import logging

    import lightning as L
    import torch
    import yaml

    from geolesf.config import to_dict
    from geolesf.data.benchmarks.registry import open_benchmark, prompt_names
    from geolesf.io.atomic import atomic_path
    from geolesf.registry import create_model

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.trainer.seed, verbose=False)
    ds = open_benchmark(cfg.data.dataset, cfg.data.root, cfg.data.split)
    names = prompt_names(ds)
    train = CropDataset(ds, cfg.data.crop, cfg.trainer.seed, cfg.data.max_images)
    kwargs = model_kwargs(cfg.model)
    model = create_model("hclip", **kwargs)
    if cfg.data.crop % model.patch_size:
        raise ConfigError(f"data.crop {cfg.data.crop}: must be a multiple of the CLIP patch size {model.patch_size}")
    model.set_classes(names)
    task = _lightning_module(model, names, cfg, int(ds.ignore_index))
    loader = torch.utils.data.DataLoader(train, batch_size=cfg.trainer.batch_size, shuffle=True,
                                         num_workers=cfg.trainer.num_workers, drop_last=len(train) >= cfg.trainer.batch_size)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    trainer = L.Trainer(max_steps=cfg.trainer.max_steps, accelerator=cfg.trainer.accelerator, devices=1,
                        logger=False, enable_checkpointing=False, enable_model_summary=False,
                        enable_progress_bar=True, num_sanity_val_steps=0)
    model.train()
    start = time.perf_counter()
    trainer.fit(task, loader)
    seconds = time.perf_counter() - start
    model.cpu().eval()
    report = model.parameter_report()
    digest = save_hclip_checkpoint(out / "hclip.pt", model, kwargs, names,
                                   extra={"dataset": cfg.data.dataset, "steps": cfg.trainer.max_steps})
    metrics = {"task": "hclip", "dataset": cfg.data.dataset, "images": len(train), "classes": len(names),
               "steps": int(trainer.global_step), "seconds": round(seconds, 2),
               "final_loss": task.history[-1]["loss"] if task.history else None, "history": task.history,
               "parameters": report, "checkpoint": "hclip.pt", "sha256": digest,
               "clip_sha256": model.clip_info.get("sha256")}
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))
    with atomic_path(out / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return out


# --------------------------------------------------------------------------------------------
# prediction
