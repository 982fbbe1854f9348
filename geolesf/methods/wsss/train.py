"""Task ``wsss``: weakly supervised semantic segmentation from image-level tags (Lightning).

``geolesf train --config configs/wsss/cam_resnet50_voc.yaml`` trains one of three methods on
image-level tags only (the dense masks are used for scoring, never for training):

* ``cam`` — a multi-label classifier with global average pooling; its CAMs are the seeds;
* ``usage`` — USAGE (methods.md §5): temperature pooling (τ by backbone type) + equivariance
  regularisation with self-adaptive network adjustment;
* ``single-stage`` — classification + segmentation branches trained jointly with online,
  affinity-refined pseudo labels, the adaptive affinity loss and the label-reassign loss (§8).

The run folder gets ``model.pt`` (``geolesf-wsss/1``; :mod:`geolesf.methods.wsss.checkpoint`),
``config.yaml``, ``history.json`` (losses per epoch) and ``metrics.json`` (the mIoU of each stage
on ``data.eval_split``, from :mod:`geolesf.methods.wsss.evaluate`, when ``trainer.evaluate`` is on).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from geolesf.errors import ConfigError, TrainingError
from geolesf.methods.wsss.single_stage import SingleStageOptions


@dataclass
class WSSSModelConfig:
    backbone: str = "resnet50"
    """resnet18 | resnet34 | resnet50 | resnet101 | vit | simple."""
    args: dict[str, Any] = field(default_factory=dict)
    """Backbone arguments: ``weights`` (local file, never downloaded), ``output_stride``, ViT
    ``embed_dim/depth/num_heads/patch_size/img_size/drop_path``, simple ``width/depth``."""
    embed_dim: int = 64
    """single-stage: embedding channels for the affinity and label-reassign losses."""
    hidden: int = 128
    """single-stage: channels of the segmentation head."""


@dataclass
class WSSSDataConfig:
    dataset: str = "voc2012"
    """voc2012 | coco2014 | coco2017 | loveda | potsdam | vaihingen."""
    root: str | None = None
    """Dataset folder (default ``$GEOLESF_DATA`` samples)."""
    split: str = "train_aug"
    eval_split: str | None = None
    """Split scored after training (default: the training split, the usual seed protocol)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Loader options: COCO ``annotation_file/image_dir/crowd``; aerial ``tile/downsample/min_fraction/tags_file``."""
    crop: int = 320
    scale_range: list[float] = field(default_factory=lambda: [0.7, 1.3])
    limit: int | None = None
    """Use only the first N training images."""
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])


@dataclass
class CAMConfig:
    bg_threshold: float | None = None
    """Seed background threshold (default 0.15 CNN / 0.55 ViT; unused without a background class)."""
    scales: list[float] = field(default_factory=lambda: [1.0, 0.5, 1.5, 2.0])
    flip: bool = True
    margin: float = 0.1
    """Best-vs-second score margin below which a pseudo-label pixel is uncertain (ignored)."""


@dataclass
class UsageConfig:
    tau: float | None = None
    """Pooling temperature (default 1.0 CNN, 0.1 ViT)."""
    lam: float = 1.0
    augmentation: str = "flip_rescale"
    scale: float = 0.5
    adjust: bool = True


@dataclass
class WSSSTrainerConfig:
    epochs: int = 5
    max_steps: int = -1
    batch_size: int = 8
    lr: float = 1e-3
    backbone_lr_mult: float = 0.1
    """Backbone learning rate = lr × this when ``model.args.weights`` is given (pretrained), else 1."""
    weight_decay: float = 1e-4
    seed: int = 0
    num_threads: int | None = None
    num_workers: int = 0
    accelerator: str = "auto"
    devices: Any = 1
    evaluate: bool = True
    eval_limit: int | None = None
    eval_max_side: int | None = None


@dataclass
class WSSSConfig:
    task: str = "wsss"
    out: str = "runs/wsss"
    method: str = "cam"
    """cam | usage | single-stage."""
    model: WSSSModelConfig = field(default_factory=WSSSModelConfig)
    data: WSSSDataConfig = field(default_factory=WSSSDataConfig)
    cam: CAMConfig = field(default_factory=CAMConfig)
    usage: UsageConfig = field(default_factory=UsageConfig)
    single_stage: SingleStageOptions = field(default_factory=SingleStageOptions)
    trainer: WSSSTrainerConfig = field(default_factory=WSSSTrainerConfig)


CONFIG = WSSSConfig


def _lightning_module(cfg: WSSSConfig, model: Any, steps_total: int) -> Any:
    import lightning as L
    import torch
    from torch.nn import functional as F

    from geolesf.methods.wsss.usage import default_tau, usage_loss

    class WSSSModule(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.history: list[dict[str, float]] = []
            self._sums: dict[str, float] = {}
            self._count = 0

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            images, labels = batch
            if cfg.method == "cam":
                parts = {"loss": F.multilabel_soft_margin_loss(self.model(images), labels)}
            elif cfg.method == "usage":
                u = cfg.usage
                tau = u.tau if u.tau is not None else default_tau(self.model.is_transformer)
                parts = usage_loss(self.model, images, labels, tau=tau, lam=u.lam, augmentation=u.augmentation,
                                   scale=u.scale, adjust=u.adjust)
                parts.pop("logits")
            else:
                from geolesf.methods.wsss.single_stage import single_stage_loss

                parts = single_stage_loss(self.model, images, labels, cfg.single_stage, step=self.global_step)
            if not torch.isfinite(parts["loss"]):
                raise TrainingError(f"{cfg.method}: loss became {float(parts['loss'])} at step {self.global_step}; "
                                    "lower trainer.lr")
            for k, v in parts.items():
                self._sums[k] = self._sums.get(k, 0.0) + float(v.detach())
            self._count += 1
            self.log("loss", parts["loss"].detach(), prog_bar=True, on_step=True, on_epoch=False)
            return parts["loss"]

        def on_train_epoch_end(self) -> None:
            row = {k: v / max(1, self._count) for k, v in self._sums.items()}
            row["epoch"] = float(self.current_epoch)
            self.history.append(row)
            self._sums, self._count = {}, 0

        def configure_optimizers(self) -> Any:
            tr = cfg.trainer
            cam_net = self.model.cam if cfg.method == "single-stage" else self.model
            backbone = list(cam_net.backbone.parameters())
            ids = {id(p) for p in backbone}
            heads = [p for p in self.model.parameters() if id(p) not in ids]
            mult = tr.backbone_lr_mult if cfg.model.args.get("weights") else 1.0
            opt = torch.optim.AdamW([{"params": backbone, "lr": tr.lr * mult}, {"params": heads, "lr": tr.lr}],
                                    weight_decay=tr.weight_decay)
            poly = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / max(1, steps_total)) ** 0.9)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": poly, "interval": "step"}}

    return WSSSModule()


def _model_args(cfg: WSSSConfig, num_fg: int) -> dict[str, Any]:
    args = {"in_chans": 3, "num_classes": num_fg, "backbone": cfg.model.backbone, **cfg.model.args}
    for reserved in ("in_chans", "num_classes", "backbone"):
        if reserved in cfg.model.args:
            raise ConfigError(f"model.args.{reserved}: set by the task; use model.backbone / the dataset instead")
    return args


def run_config(cfg: WSSSConfig) -> Path:
    """Train ``cfg.method`` on image-level tags into ``cfg.out``; returns the run folder."""
    import lightning as L
    import torch
    import yaml
    from torch.utils.data import DataLoader

    from geolesf.colors import default_palette
    from geolesf.io.atomic import atomic_path
    from geolesf.methods.wsss.checkpoint import METHODS, WSSSBundle, build_model
    from geolesf.methods.wsss.checkpoint import save as save_wsss_checkpoint
    from geolesf.methods.wsss.data import TrainCrops, open_dataset
    from geolesf.methods.wsss.usage import default_bg_threshold, default_tau

    if cfg.method not in METHODS:
        raise ConfigError(f"method: expected one of {', '.join(METHODS)}, found '{cfg.method}'")
    tr = cfg.trainer
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(tr.seed, workers=True, verbose=False)
    if tr.num_threads:
        torch.set_num_threads(int(tr.num_threads))
    ds = open_dataset(cfg.data.dataset, cfg.data.root, cfg.data.split, **dict(cfg.data.options))
    if not ds.background:
        cfg.single_stage.bg_threshold = None
    fg = ds.fg_names
    args = _model_args(cfg, len(fg))
    ss_info: dict[str, Any] = {}
    if cfg.method == "single-stage":
        ss_info = {"seg_classes": len(ds.class_names), "embed_dim": cfg.model.embed_dim, "hidden": cfg.model.hidden,
                   "options": asdict(cfg.single_stage)}
    model = build_model(cfg.method, args, ss_info)
    cam_net = model.cam if cfg.method == "single-stage" else model
    if cfg.method == "usage":
        cam_net.pool = cfg.usage.tau if cfg.usage.tau is not None else default_tau(cam_net.is_transformer)
    crop = cfg.data.crop
    if crop % max(1, cam_net.size_divisor):
        raise ConfigError(f"data.crop {crop}: the {cfg.model.backbone} backbone needs a multiple of "
                          f"{cam_net.size_divisor}")
    train = TrainCrops(ds, crop, tuple(cfg.data.scale_range), tuple(cfg.data.mean), tuple(cfg.data.std),
                       seed=tr.seed, limit=cfg.data.limit)
    loader = DataLoader(train, batch_size=tr.batch_size, shuffle=True, num_workers=tr.num_workers,
                        drop_last=len(train) > tr.batch_size, generator=torch.Generator().manual_seed(tr.seed))
    steps = tr.max_steps if tr.max_steps and tr.max_steps > 0 else tr.epochs * math.ceil(len(loader))
    module = _lightning_module(cfg, model, steps)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    trainer = L.Trainer(max_epochs=tr.epochs, max_steps=tr.max_steps, accelerator=tr.accelerator, devices=tr.devices,
                        logger=False, enable_checkpointing=False, enable_model_summary=False,
                        default_root_dir=str(out), num_sanity_val_steps=0)
    trainer.fit(module, loader)
    model = module.model.cpu().eval()

    bg = cfg.cam.bg_threshold if cfg.cam.bg_threshold is not None else default_bg_threshold(cam_net.is_transformer)
    colors = [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in default_palette(len(ds.class_names))]
    bundle = WSSSBundle(
        method=cfg.method, model=model, model_args=args, class_names=list(ds.class_names),
        class_ids=list(ds.class_ids), colors=colors, background=ds.background, mean=tuple(cfg.data.mean),
        std=tuple(cfg.data.std),
        cam={"bg_threshold": bg if ds.background else None, "scales": list(cfg.cam.scales), "flip": cfg.cam.flip,
             "margin": cfg.cam.margin, "pool": cam_net.pool},
        single_stage=ss_info,
        extra={"dataset": ds.name, "data_root": str(cfg.data.root) if cfg.data.root else None,
               "split": cfg.data.eval_split or cfg.data.split, "dataset_options": dict(cfg.data.options),
               "steps": int(trainer.global_step), "seed": tr.seed},
    )
    digest = save_wsss_checkpoint(out / "model.pt", bundle)
    bundle.sha256 = digest
    with atomic_path(out / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(asdict(cfg), sort_keys=False))
    with atomic_path(out / "history.json") as tmp:
        tmp.write_text(json.dumps(module.history, indent=1) + "\n")
    metrics: dict[str, Any] = {"method": cfg.method, "backbone": cfg.model.backbone, "dataset": ds.name,
                               "train_images": len(train), "steps": int(trainer.global_step),
                               "final_loss": module.history[-1].get("loss") if module.history else None,
                               "checkpoint_sha256": digest}
    if tr.evaluate:
        from geolesf.methods.wsss.evaluate import evaluate_bundle

        eval_ds = ds if (cfg.data.eval_split or cfg.data.split) == cfg.data.split else open_dataset(
            cfg.data.dataset, cfg.data.root, cfg.data.eval_split, **dict(cfg.data.options))
        opts = {"limit": tr.eval_limit, "max_side": tr.eval_max_side, "progress": False}
        stages = ["seeds", "pseudo"] + (["final"] if cfg.method == "single-stage" else [])
        for what in stages:
            m = evaluate_bundle(bundle, eval_ds, what, opts)
            metrics[what] = {k: m[k] for k in ("mIoU", "mIoU_confident", "coverage", "per_class_IoU", "images")}
            print(f"[wsss {cfg.method}] {m['summary']}")
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=1) + "\n")
    print(f"[wsss {cfg.method}] wrote {out / 'model.pt'} (sha256 {digest[:12]}…)")
    return out
