"""Task ``wsss``: weakly supervised semantic segmentation from image-level tags (Lightning).

``geolesf train --config wsss/cam_resnet50_voc`` trains one of three methods on
image-level tags only (the dense masks are used for scoring, never for training):

* ``cam`` — a multi-label classifier with global average pooling; its CAMs are the seeds;
* ``usage`` — USAGE (methods.md §5): temperature pooling (τ by backbone type) + equivariance
  regularisation with self-adaptive network adjustment;
* ``single-stage`` — classification + segmentation branches trained jointly with online,
  affinity-refined pseudo labels, the adaptive affinity loss and the label-reassign loss (§8).

The run folder gets ``model.pt`` (``geolesf-wsss/1``; :mod:`geolesf.methods.wsss.checkpoint`),
``config.yaml``, ``history.json`` (losses per epoch) and ``metrics.json`` (the mIoU of each stage
on ``data.eval_split``, from :mod:`geolesf.methods.wsss.evaluate`, when ``trainer.evaluate`` is on).
Training runs :class:`WSSSModule` on :class:`WSSSDataModule` with the Trainer of
:func:`geolesf.training.make_trainer` (``trainer.logger``, ``precision``, ``strategy``... from the config).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

from geolesf.colors import default_palette
from geolesf.errors import ConfigError, TrainingError
from geolesf.methods.wsss.checkpoint import METHODS, WSSSBundle, build_model
from geolesf.methods.wsss.checkpoint import save as save_wsss_checkpoint
from geolesf.methods.wsss.data import TrainCrops, WSSSDataset, open_dataset
from geolesf.methods.wsss.single_stage import SingleStageOptions, single_stage_loss
from geolesf.methods.wsss.usage import default_bg_threshold, default_tau, usage_loss
from geolesf.config import LightningOptions, run_config_class
from geolesf.io.atomic import write_json, write_yaml
from geolesf.training import make_trainer, start_run


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
class WSSSTrainerConfig(LightningOptions):
    """``trainer:`` — the shared Lightning options (seed 0, logger off...) plus this method's schedule."""

    epochs: int = 5
    max_steps: int = -1
    batch_size: int = 8
    lr: float = 1e-3
    backbone_lr_mult: float = 0.1
    """Backbone learning rate = lr × this when ``model.args.weights`` is given (pretrained), else 1."""
    weight_decay: float = 1e-4
    num_workers: int = 0
    evaluate: bool = True
    eval_limit: int | None = None
    eval_max_side: int | None = None


CONFIG = WSSSConfig = run_config_class(
    "WSSSConfig", task="wsss", out="runs/wsss", model=WSSSModelConfig, data=WSSSDataConfig,
    trainer=WSSSTrainerConfig,
    extra=(("method", str, "cam"), ("cam", CAMConfig, CAMConfig), ("usage", UsageConfig, UsageConfig),
           ("single_stage", SingleStageOptions, SingleStageOptions)), module=__name__,
)


class WSSSDataModule(L.LightningDataModule):
    """Random training crops of ``data.split`` with their image-level tags (the masks are never used)."""

    def __init__(self, cfg: WSSSConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.data
        self.dataset = open_dataset(d.dataset, d.root, d.split, **dict(d.options))
        self.train: TrainCrops | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train is None:
            d = self.cfg.data
            self.train = TrainCrops(self.dataset, d.crop, tuple(d.scale_range), tuple(d.mean), tuple(d.std),
                                    seed=self.cfg.trainer.seed, limit=d.limit)

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        tr = self.cfg.trainer
        return DataLoader(self.train, batch_size=tr.batch_size, shuffle=True, num_workers=tr.num_workers,
                          drop_last=len(self.train) > tr.batch_size, generator=torch.Generator().manual_seed(tr.seed))

    def eval_dataset(self) -> WSSSDataset:
        """The split scored after training (``data.eval_split``, default the training split)."""
        d = self.cfg.data
        if (d.eval_split or d.split) == d.split:
            return self.dataset
        return open_dataset(d.dataset, d.root, d.eval_split, **dict(d.options))


class WSSSModule(L.LightningModule):
    """The losses of ``cfg.method`` on tagged crops; AdamW with a poly schedule over ``steps_total`` steps.

    ``history`` holds the mean of each loss term per epoch (written to ``history.json``).
    """

    def __init__(self, cfg: WSSSConfig, model: Any, steps_total: int) -> None:
        super().__init__()
        self.cfg, self.model, self.steps_total = cfg, model, int(steps_total)
        self.history: list[dict[str, float]] = []
        self._sums: dict[str, float] = {}
        self._count = 0

    def losses(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        if cfg.method == "cam":
            return {"loss": F.multilabel_soft_margin_loss(self.model(images), labels)}
        if cfg.method == "usage":
            u = cfg.usage
            tau = u.tau if u.tau is not None else default_tau(self.model.is_transformer)
            parts = usage_loss(self.model, images, labels, tau=tau, lam=u.lam, augmentation=u.augmentation,
                               scale=u.scale, adjust=u.adjust)
            parts.pop("logits")
            return parts
        return single_stage_loss(self.model, images, labels, cfg.single_stage, step=self.global_step)

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        images, labels = batch
        parts = self.losses(images, labels)
        if not torch.isfinite(parts["loss"]):
            raise TrainingError(f"{self.cfg.method}: loss became {float(parts['loss'])} at step {self.global_step}; "
                                "lower trainer.lr")
        for k, v in parts.items():
            self._sums[k] = self._sums.get(k, 0.0) + float(v.detach())
        self._count += 1
        self.log("train_loss", parts["loss"].detach(), prog_bar=True, on_step=True, on_epoch=False)
        return parts["loss"]

    def on_train_epoch_end(self) -> None:
        row = {k: v / max(1, self._count) for k, v in self._sums.items()}
        row["epoch"] = float(self.current_epoch)
        self.history.append(row)
        self._sums, self._count = {}, 0

    def configure_optimizers(self) -> Any:
        cfg, tr = self.cfg, self.cfg.trainer
        cam_net = self.model.cam if cfg.method == "single-stage" else self.model
        backbone = list(cam_net.backbone.parameters())
        ids = {id(p) for p in backbone}
        heads = [p for p in self.model.parameters() if id(p) not in ids]
        mult = tr.backbone_lr_mult if cfg.model.args.get("weights") else 1.0
        opt = torch.optim.AdamW([{"params": backbone, "lr": tr.lr * mult}, {"params": heads, "lr": tr.lr}],
                                weight_decay=tr.weight_decay)
        steps = self.steps_total
        poly = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / max(1, steps)) ** 0.9)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": poly, "interval": "step"}}


def _model_args(cfg: WSSSConfig, num_fg: int) -> dict[str, Any]:
    args = {"in_chans": 3, "num_classes": num_fg, "backbone": cfg.model.backbone, **cfg.model.args}
    for reserved in ("in_chans", "num_classes", "backbone"):
        if reserved in cfg.model.args:
            raise ConfigError(f"model.args.{reserved}: set by the task; use model.backbone / the dataset instead")
    return args


def _build_model(cfg: WSSSConfig, ds: WSSSDataset) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """``(model, model arguments, single-stage settings)`` for the dataset's classes; checks ``data.crop``."""
    args = _model_args(cfg, len(ds.fg_names))
    ss_info: dict[str, Any] = {}
    if cfg.method == "single-stage":
        ss_info = {"seg_classes": len(ds.class_names), "embed_dim": cfg.model.embed_dim, "hidden": cfg.model.hidden,
                   "options": asdict(cfg.single_stage)}
    model = build_model(cfg.method, args, ss_info)
    cam_net = model.cam if cfg.method == "single-stage" else model
    if cfg.method == "usage":
        cam_net.pool = cfg.usage.tau if cfg.usage.tau is not None else default_tau(cam_net.is_transformer)
    if cfg.data.crop % max(1, cam_net.size_divisor):
        raise ConfigError(f"data.crop {cfg.data.crop}: the {cfg.model.backbone} backbone needs a multiple of "
                          f"{cam_net.size_divisor}")
    return model, args, ss_info


def _bundle(cfg: WSSSConfig, ds: WSSSDataset, model: Any, args: dict[str, Any], ss_info: dict[str, Any],
            steps: int) -> WSSSBundle:
    """The trained model with its class layout and seed settings (what ``model.pt`` stores)."""
    cam_net = model.cam if cfg.method == "single-stage" else model
    bg = cfg.cam.bg_threshold if cfg.cam.bg_threshold is not None else default_bg_threshold(cam_net.is_transformer)
    colors = [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in default_palette(len(ds.class_names))]
    return WSSSBundle(
        method=cfg.method, model=model, model_args=args, class_names=list(ds.class_names),
        class_ids=list(ds.class_ids), colors=colors, background=ds.background, mean=tuple(cfg.data.mean),
        std=tuple(cfg.data.std),
        cam={"bg_threshold": bg if ds.background else None, "scales": list(cfg.cam.scales), "flip": cfg.cam.flip,
             "margin": cfg.cam.margin, "pool": cam_net.pool},
        single_stage=ss_info,
        extra={"dataset": ds.name, "data_root": str(cfg.data.root) if cfg.data.root else None,
               "split": cfg.data.eval_split or cfg.data.split, "dataset_options": dict(cfg.data.options),
               "steps": steps, "seed": cfg.trainer.seed},
    )


def _evaluate(cfg: WSSSConfig, bundle: WSSSBundle, eval_ds: WSSSDataset) -> dict[str, Any]:
    """mIoU of each stage of the trained bundle on the evaluation split (the ``metrics.json`` entries)."""
    from geolesf.methods.wsss.evaluate import evaluate_bundle

    tr = cfg.trainer
    opts = {"limit": tr.eval_limit, "max_side": tr.eval_max_side, "progress": False}
    stages = ["seeds", "pseudo"] + (["final"] if cfg.method == "single-stage" else [])
    metrics: dict[str, Any] = {}
    for what in stages:
        m = evaluate_bundle(bundle, eval_ds, what, opts)
        metrics[what] = {k: m[k] for k in ("mIoU", "mIoU_confident", "coverage", "per_class_IoU", "images")}
        print(f"[wsss {cfg.method}] {m['summary']}")
    return metrics


def run_config(cfg: WSSSConfig) -> Path:
    """Train ``cfg.method`` on image-level tags into ``cfg.out``; returns the run folder."""
    if cfg.method not in METHODS:
        raise ConfigError(f"method: expected one of {', '.join(METHODS)}, found '{cfg.method}'")
    tr = cfg.trainer
    out = start_run(cfg.out, tr, record=cfg)
    data = WSSSDataModule(cfg)
    ds = data.dataset
    if not ds.background:
        cfg.single_stage.bg_threshold = None
    model, args, ss_info = _build_model(cfg, ds)
    data.setup("fit")
    steps = tr.max_steps if tr.max_steps and tr.max_steps > 0 else tr.epochs * math.ceil(len(data.train_dataloader()))
    module = WSSSModule(cfg, model, steps)
    trainer = make_trainer(tr, out, max_epochs=tr.epochs, max_steps=tr.max_steps, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=data)

    bundle = _bundle(cfg, ds, module.model.cpu().eval(), args, ss_info, int(trainer.global_step))
    digest = save_wsss_checkpoint(out / "model.pt", bundle)
    bundle.sha256 = digest
    write_yaml(out / "config.yaml", cfg)
    write_json(out / "history.json", module.history)
    metrics: dict[str, Any] = {"method": cfg.method, "backbone": cfg.model.backbone, "dataset": ds.name,
                               "train_images": len(data.train), "steps": int(trainer.global_step),
                               "final_loss": module.history[-1].get("loss") if module.history else None,
                               "checkpoint_sha256": digest}
    if tr.evaluate:
        metrics.update(_evaluate(cfg, bundle, data.eval_dataset()))
    write_json(out / "metrics.json", metrics)
    print(f"[wsss {cfg.method}] wrote {out / 'model.pt'} (sha256 {digest[:12]}…)")
    return out
