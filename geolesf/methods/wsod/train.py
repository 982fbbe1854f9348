"""Task ``wsod``: train NDI-WSOD from image-level labels with Lightning (methods.md §7.4).

``geolesf train --config wsod/ndi_vgg16_voc07`` reads a VOC (XML) or COCO (JSON)
dataset, keeps only the **image-level labels** of each image (classes of its non-difficult /
non-crowd objects), computes or loads object proposals, and trains one image per step with a
random training scale (shorter side) and random horizontal flip, SGD (momentum 0.9, weight
decay 5e-4), ``iter_size`` gradient accumulation and a step LR schedule (×0.1 at each of
``lr_steps``). The run folder receives

* ``ndi.pt`` — checkpoint ``format: geolesf-wsod/1`` (state dict incl. the NDI memory, model
  arguments, class names, proposal and test settings), ``torch.load(weights_only=True)``-safe;
* ``metrics.json`` — per-step losses (history), steps trained, and, with ``trainer.evaluate``,
  the evaluation of the test split (mAP / CorLoc or COCO AP);
* ``config.yaml`` — the resolved config (re-run with ``--config``).

The schedule follows Detectron / PCL: linear warm-up over 500 steps from lr/3, biases at 2× lr
without weight decay, the ``iter_size`` gradients summed (not averaged) before each step, conv1–2
of VGG16 frozen (``freeze_at: 2``). Deviation (docs/wsod.md): RoIs per image are all proposals
up to ``max_proposals`` rather than sampled to 4096.

Training runs :class:`WSODModule` on :class:`WSODDataModule` with the Trainer of
:func:`geolesf.training.make_trainer` (``trainer.logger``, ``precision``, ``strategy``... from the config).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from geolesf.errors import ConfigError, TrainingError
from geolesf.methods.wsod.checkpoint import save as save_wsod_checkpoint
from geolesf.registry import create_model
from geolesf.config import LightningOptions, ModelConfig, run_config_class
from geolesf.io.atomic import write_json, write_yaml
from geolesf.training import make_trainer, start_run

SCALES = [480, 576, 688, 864, 1000, 1200]


@dataclass
class WSODModelConfig(ModelConfig):
    """``args``: constructor arguments of ``ndi-wsod`` (backbone, backbone_weights, refine_times, …)."""

    name: str = "ndi-wsod"


@dataclass
class WSODDataConfig:
    dataset: str = "voc2007"
    """voc2007 | voc2012 | coco (any COCO-format JSON)."""
    root: str | None = None
    """VOC: folder holding VOCdevkit (or VOCdevkit / VOC2007 itself). COCO: folder with annotations/ and images."""
    split: str | None = "trainval"
    """VOC ImageSets/Main list (None = every annotation); COCO: the split folder name (train2017)."""
    annotations: str | None = None
    """COCO annotation JSON (overrides root/annotations/instances_<split>.json)."""
    images: str | None = None
    """COCO image folder (overrides root/<split>)."""
    limit: int | None = None
    """Use only the first N images (demos, tests)."""
    proposals: str = "selective_search"
    """``selective_search`` or a precomputed ``.mat`` / ``.pkl`` proposal file."""
    proposal_mode: str = "fast"
    proposal_max_side: int | None = 500
    max_proposals: int = 2000
    min_proposal_size: int = 8
    scales: list[int] = field(default_factory=lambda: list(SCALES))
    """Training scales: the shorter image side, one drawn at random per step."""
    max_size: int = 2000
    flip: bool = True


@dataclass
class WSODTrainerConfig(LightningOptions):
    """``trainer:`` — the shared Lightning options (seed 4 here, logger off...) plus the Detectron schedule."""

    seed: int = 4
    iterations: int = 70000
    """Optimizer steps (each accumulates ``iter_size`` images)."""
    iter_size: int = 4
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_steps: list[int] = field(default_factory=lambda: [60000])
    gamma: float = 0.1
    warmup_iters: int = 500
    """Detectron linear warm-up from ``warmup_factor × lr`` over this many steps (0 = none)."""
    warmup_factor: float = 1.0 / 3.0
    bias_double_lr: bool = True
    """Detectron ``BIAS_DOUBLE_LR`` (and no weight decay on biases, ``BIAS_WEIGHT_DECAY: False``)."""
    evaluate: bool = False
    """Evaluate on ``test_split`` after training and store the numbers in metrics.json."""
    test_split: str | None = "test"
    test_scales: list[int] = field(default_factory=lambda: list(SCALES))
    test_flip: bool = True
    nms: float = 0.4
    iou_rule: str = "gt"
    """VOC mAP/CorLoc matching after training: ``gt`` (IoU > 0.5, NDI-WSOD's voc_eval.py) or ``ge`` (MATLAB devkit)."""


CONFIG = WSODConfig = run_config_class(
    "WSODConfig", task="wsod", out="runs/ndi_wsod", model=WSODModelConfig, data=WSODDataConfig,
    trainer=WSODTrainerConfig, module=__name__,
)


def build_dataset(data: WSODDataConfig, split: str | None) -> Any:
    """The VOC or COCO detection dataset named by the data config."""
    from geolesf.data.benchmarks.coco_det import COCODetection, find_coco_files
    from geolesf.data.benchmarks.voc_det import VOCDetection

    name = data.dataset.lower()
    if name in ("voc2007", "voc2012"):
        if not data.root:
            raise ConfigError("data.root: expected the folder holding VOCdevkit, found nothing")
        return VOCDetection(data.root, name[3:], split)
    if name in ("coco", "coco2014", "coco2017"):
        if data.annotations and data.images:
            return COCODetection(data.annotations, data.images)
        if not data.root:
            raise ConfigError("data: COCO needs data.annotations + data.images, or data.root with the COCO layout")
        ann, images = find_coco_files(data.root, split or "train2017")
        return COCODetection(data.annotations or ann, data.images or images)
    raise ConfigError(f"data.dataset: expected voc2007, voc2012 or coco, found '{data.dataset}'")


def proposal_provider(data: WSODDataConfig) -> Any:
    from geolesf.methods.wsod.proposals import ProposalProvider

    return ProposalProvider(data.proposals, mode=data.proposal_mode, max_side=data.proposal_max_side,
                            max_proposals=data.max_proposals, min_size=data.min_proposal_size)


class WSODTrainSet:
    """Per item: a randomly scaled / flipped image, its proposals in that frame, image labels."""

    def __init__(self, dataset: Any, proposals: Any, scales: list[int], max_size: int, flip: bool, seed: int) -> None:
        self.dataset, self.proposals = dataset, proposals
        self.scales, self.max_size, self.flip = list(scales), int(max_size), bool(flip)
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import cv2

        item = self.dataset[index]
        image = item["image"]
        boxes = self.proposals(item["image_id"], image).astype(np.float64)
        h, w = image.shape[:2]
        if self.flip and self.rng.random() < 0.5:
            image = image[:, ::-1]
            boxes = boxes.copy()
            boxes[:, [0, 2]] = w - 1 - boxes[:, [2, 0]]
        target = self.rng.choice(self.scales)
        scale = min(target / min(h, w), self.max_size / max(h, w))
        image = cv2.resize(np.ascontiguousarray(image), (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_LINEAR)
        return {"image": image, "rois": (boxes * scale).astype(np.float32), "image_labels": item["image_labels"],
                "image_id": item["image_id"]}


def lr_factor(step: int, tr: WSODTrainerConfig) -> float:
    """Detectron ``steps_with_decay`` with linear warm-up: the multiplier of the base LR at ``step``."""
    factor = tr.gamma ** sum(1 for s in sorted(tr.lr_steps) if step >= s)
    if step < tr.warmup_iters:
        alpha = step / tr.warmup_iters
        factor *= tr.warmup_factor * (1 - alpha) + alpha
    return factor


def _first(batch: list[Any]) -> Any:
    return batch[0]


class WSODDataModule(L.LightningDataModule):
    """One randomly scaled / flipped image per batch with its proposals and image-level labels."""

    def __init__(self, cfg: WSODConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.data
        self.dataset = build_dataset(d, d.split)
        if d.limit:
            self.dataset.ids = self.dataset.ids[: int(d.limit)]
        self.class_names = list(self.dataset.classes)
        self.train: WSODTrainSet | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train is None:
            d = self.cfg.data
            self.train = WSODTrainSet(self.dataset, proposal_provider(d), d.scales, d.max_size, d.flip,
                                      self.cfg.trainer.seed)

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return DataLoader(self.train, batch_size=1, shuffle=True, collate_fn=_first,
                          generator=torch.Generator().manual_seed(self.cfg.trainer.seed))

    def test_dataset(self) -> Any:
        """``trainer.test_split`` of the same dataset (first ``data.limit`` images)."""
        d = self.cfg.data
        test = build_dataset(d, self.cfg.trainer.test_split)
        if d.limit:
            test.ids = test.ids[: int(d.limit)]
        return test


class WSODModule(L.LightningModule):
    """NDI-WSOD losses of one image per step; SGD with Detectron's warm-up + step schedule (:func:`lr_factor`).

    ``history`` holds one row per image (step, total loss and each loss term).
    """

    def __init__(self, cfg: WSODConfig, num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = create_model(cfg.model.name, num_classes=num_classes, **cfg.model.args)
        self.history: list[dict[str, float]] = []

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Any:
        model = self.model
        x = model.preprocess(batch["image"])
        rois = torch.as_tensor(batch["rois"], device=x.device)
        labels = torch.as_tensor(batch["image_labels"], device=x.device)
        losses = model.losses(model(x, rois), rois, labels)
        total = sum(losses.values())
        if not torch.isfinite(total):
            raise TrainingError(f"wsod: loss became {float(total)} at step {self.global_step} "
                                f"(image {batch['image_id']}); lower trainer.lr")
        row = {"step": int(self.global_step), "loss": float(total.detach())}
        row.update({k: float(v.detach()) for k, v in losses.items()})
        self.history.append(row)
        self.log("train_loss", total, prog_bar=True, batch_size=1)
        # Lightning divides by accumulate_grad_batches; the official loop sums the iter_size
        # gradients (one backward per image, one optimizer step), so undo the division.
        return total * self.cfg.trainer.iter_size

    def configure_optimizers(self) -> dict[str, Any]:
        tr = self.cfg.trainer
        params = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        weights = [p for n, p in params if not (tr.bias_double_lr and n.endswith(".bias"))]
        biases = [p for n, p in params if tr.bias_double_lr and n.endswith(".bias")]
        groups = [{"params": weights, "lr": tr.lr, "weight_decay": tr.weight_decay}]
        if biases:
            groups.append({"params": biases, "lr": 2 * tr.lr, "weight_decay": 0.0})
        opt = torch.optim.SGD(groups, lr=tr.lr, momentum=tr.momentum)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: lr_factor(it, tr))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def run_config(cfg: WSODConfig) -> Path:
    """Train NDI-WSOD into ``cfg.out``; returns the run folder."""
    tr, d = cfg.trainer, cfg.data
    if tr.iterations < 1 or tr.iter_size < 1:
        raise ConfigError(f"trainer.iterations and trainer.iter_size must be ≥ 1, found {tr.iterations}, {tr.iter_size}")
    if not d.scales:
        raise ConfigError("data.scales: expected at least one training scale")
    if tr.iou_rule not in ("gt", "ge"):
        raise ConfigError(f"trainer.iou_rule: expected gt (IoU > 0.5, NDI-WSOD/py-faster-rcnn) or ge "
                          f"(IoU >= 0.5, VOC MATLAB devkit), found {tr.iou_rule!r}")
    out = start_run(cfg.out, tr, record=cfg)
    data = WSODDataModule(cfg)
    module = WSODModule(cfg, len(data.class_names))
    trainer = make_trainer(tr, out, max_steps=tr.iterations, max_epochs=-1, accumulate_grad_batches=tr.iter_size,
                           num_sanity_val_steps=0, log_every_n_steps=1)
    trainer.fit(module, datamodule=data)
    model = module.model.cpu().eval()
    metrics: dict[str, Any] = {"task": "wsod", "model": cfg.model.name, "dataset": d.dataset,
                               "train_images": len(data.dataset), "steps": int(trainer.global_step),
                               "images_seen": len(module.history), "history": module.history}
    if module.history:
        last = module.history[-max(1, tr.iter_size):]
        metrics["final_loss"] = float(np.mean([r["loss"] for r in last]))
    ckpt = out / "ndi.pt"
    metrics["checkpoint_sha256"] = save_wsod_checkpoint(ckpt, model, cfg, data.class_names)
    if tr.evaluate:
        from geolesf.methods.wsod.evaluate import evaluate_dataset

        metrics["evaluation"] = evaluate_dataset(model, data.test_dataset(), proposal_provider(d),
                                                 scales=tr.test_scales, max_size=d.max_size, flip=tr.test_flip,
                                                 nms=tr.nms, coco=d.dataset.lower().startswith("coco"),
                                                 iou_rule=tr.iou_rule)
    write_json(out / "metrics.json", metrics)
    write_yaml(out / "config.yaml", cfg)
    print(f"wrote {ckpt}")
    return out
