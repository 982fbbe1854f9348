"""Patch-based hyperspectral classification with Lightning (S²Mamba and other ``hsi-patch`` models).

The official S²Mamba protocol (methods.md §2.7) is reproduced here:

* cross-entropy loss, AdamW (weight decay on *all* parameters, as the official optimizer
  is built from ``model.parameters()`` without groups);
* ExponentialLR with γ = 0.99 whose ``step()`` the official loop calls at the *start* of
  every epoch, so epoch ``e`` trains with ``lr·γ^(e+1)``; we express that exactly with a
  ``LambdaLR`` stepped at epoch ends;
* batch 64, no augmentation, the **last-epoch** model is the reported one (no model
  selection on test pixels, which would leak).

Checkpoints (``model.pt``) are plain dictionaries of tensors and primitives, loadable with
``torch.load(..., weights_only=True)``: state dict, model name and constructor arguments,
band statistics (and PCA) used to normalise the input, class ids / names / colours and
the patch geometry. Lightning's own ``last.ckpt`` is kept beside it for ``--resume``.

``trainer.resume`` goes through :func:`resume_checkpoint`: a local file only (a URL or any
other fsspec path is refused with a :class:`~geolesf.errors.ConfigError` before anything is
fetched), read with ``torch.load(weights_only=True)`` to check it holds only tensors and plain
containers, then handed to Lightning with ``weights_only=True`` so nothing in it is unpickled
as code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from geolesf.errors import ConfigError, DataError, TrainingError
from geolesf.methods.hsi.checkpoint import PatchCheckpoint, save as save_patch_checkpoint
from geolesf.methods.hsi.train import register_trainer
from geolesf.methods.hsi.windowed import scene_gatherer
from geolesf.predict.batching import pin_mmap_threshold
from geolesf.predict.patches import PatchGatherer, predict_pixels
from geolesf.registry import create_model
from geolesf.io.atomic import write_json
from geolesf.training import make_trainer, start_run


class _PixelDataset(Dataset):
    """Indices into a list of labelled pixels; patches are gathered per batch in ``collate``."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, targets: np.ndarray, gather: PatchGatherer) -> None:
        self.rows = torch.as_tensor(rows, dtype=torch.long)
        self.cols = torch.as_tensor(cols, dtype=torch.long)
        self.targets = torch.as_tensor(targets, dtype=torch.long)
        self.gather = gather

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.gather(self.rows[idx], self.cols[idx]), self.targets[idx]


def pixel_loader(
    rows: np.ndarray,
    cols: np.ndarray,
    targets: np.ndarray,
    gather: PatchGatherer,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
) -> DataLoader:
    dataset = _PixelDataset(rows, cols, targets, gather)
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=dataset.collate, generator=generator
    )


class PixelDataModule(L.LightningDataModule):
    """Train / validation loaders over a prepared scene's labelled pixels (patches gathered per batch).

    ``train_dataloader`` shuffles the split's training pixels (seeded); ``val_dataloader`` walks
    its test pixels in order. Pass it to any ``Trainer``: ``trainer.fit(module, datamodule=dm)``.
    """

    def __init__(
        self,
        scene: Any,
        patch_size: int,
        padding: str = "symmetric",
        batch_size: int = 64,
        seed: int = 0,
        val_batch_size: int = 1024,
    ) -> None:
        super().__init__()
        self.scene = scene
        self.gather = scene_gatherer(scene, patch_size, padding)  # whole cube, or windowed (train preloaded)
        self.batch_size = batch_size
        self.seed = seed
        self.val_batch_size = val_batch_size
        if len(scene.pixels("train")) == 0:
            raise DataError(f"split '{scene.split.name}' has no training pixels")

    def _loader(self, part: str, batch_size: int, shuffle: bool) -> DataLoader:
        px = self.scene.pixels(part)
        targets = self.scene.y[px[:, 0], px[:, 1]]
        return pixel_loader(px[:, 0], px[:, 1], targets, self.gather, batch_size, shuffle, self.seed)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("test", self.val_batch_size, False)


class HSIClassificationModule(L.LightningModule):
    """Thin Lightning wrapper: a registry model, cross-entropy, AdamW + the official LR schedule."""

    def __init__(
        self,
        model_name: str,
        model_args: dict[str, Any],
        lr: float = 5e-4,
        weight_decay: float = 5e-3,
        gamma: float = 0.99,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = create_model(model_name, **model_args)
        self.loss = nn.CrossEntropyLoss()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self.loss(logits, y)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"training loss became {loss.item()} at epoch {self.current_epoch}, batch {batch_idx}; "
                "lower the learning rate or check the cube for extreme values"
            )
        acc = (logits.argmax(1) == y).float().mean()
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        self.log("train_acc", acc, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", self.loss(logits, y), on_epoch=True, batch_size=len(y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean(), on_epoch=True, prog_bar=True, batch_size=len(y))

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        gamma = hp.gamma
        # The official loop steps ExponentialLR at the start of each epoch: epoch e uses lr·γ^(e+1).
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: gamma ** (epoch + 1))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


class HistoryCallback(L.Callback):
    """Per-epoch loss/accuracy (and test OA when evaluated) collected for history.json.

    The validation pixels are the split's test pixels, so the logged ``val_loss`` / ``val_acc``
    are recorded as ``test_loss`` / ``test_OA``.
    """

    KEYS = {"train_loss": "train_loss", "train_acc": "train_acc", "val_loss": "test_loss", "val_acc": "test_OA"}

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []
        self._lr = float("nan")

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # The learning rate this epoch trains with (the scheduler steps before epoch-end hooks).
        self._lr = float(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch + 1}
        for key, name in self.KEYS.items():
            if key in metrics:
                row[name] = float(metrics[key])
        row["lr"] = self._lr
        self.history.append(row)


# --------------------------------------------------------------------------------------------
# trainer for registry kind "pixel" (plugged into geolesf.methods.hsi.train)


@dataclass
class PatchPredictor:
    """Applies a trained patch model to every pixel of a prepared scene."""

    model: nn.Module
    gather: PatchGatherer
    batch_size: int = 1024

    def predict_scene(self, scene: Any) -> np.ndarray:
        h, w = scene.shape
        rows, cols = np.divmod(np.arange(h * w), w)
        with torch.inference_mode():
            return predict_pixels(self.model, self.gather, rows, cols, self.batch_size).reshape(h, w)

    def classify_pixels(self, scene: Any, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Class indices of the pixels ``(rows, cols)`` only (``trainer.scene_map: false``)."""
        with torch.inference_mode():
            return predict_pixels(self.model, self.gather, rows, cols, self.batch_size)


def _model_args(cfg: Any, scene: Any) -> dict[str, Any]:
    """Constructor arguments: the config's, plus bands/classes/patch filled in from the data."""
    import inspect

    from geolesf.registry import get_entry

    args = dict(cfg.model.args or {})
    args.update(in_chans=scene.num_features, num_classes=scene.num_classes)
    params = inspect.signature(get_entry(cfg.model.name).fn).parameters
    if "patch_size" in params:
        args["patch_size"] = cfg.data.patch_size
    if "scan_backend" in params and "scan_backend" not in args:
        args["scan_backend"] = cfg.trainer.scan_backend
    return args


def _plot_history(path: Path, history: list[dict[str, float]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geolesf.io.atomic import atomic_path

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(epochs, [h.get("train_loss", np.nan) for h in history], label="train loss")
    ax1.set_xlabel("epoch"), ax1.set_ylabel("cross-entropy"), ax1.set_yscale("log"), ax1.legend()
    ax2.plot(epochs, [h.get("train_acc", np.nan) for h in history], label="train accuracy")
    test = [(h["epoch"], h["test_OA"]) for h in history if "test_OA" in h]
    if test:
        ax2.plot(*zip(*test), "o-", label="test OA")
    ax2.set_xlabel("epoch"), ax2.set_ylabel("accuracy"), ax2.set_ylim(0, 1), ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def resume_checkpoint(value: str | Path | None) -> Path | None:
    """The verified local Lightning checkpoint that ``trainer.resume`` names (None: start afresh).

    Refuses, with a one-line :class:`ConfigError` naming ``trainer.resume``: a URL or fsspec
    path (``scheme://…``, ``a::b``; Lightning would fetch it and unpickle it with
    ``weights_only=False``), a missing file, and a file that ``torch.load(weights_only=True)``
    cannot read (a pickle that would call arbitrary code is one of those).
    """
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip()
    if "://" in text or "::" in text:
        raise ConfigError(f"trainer.resume: {text} is not a local file (remote checkpoints are never loaded; "
                          "download it yourself and give its path)")
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigError(f"trainer.resume: {path}: checkpoint file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - anything but tensors and plain containers is refused
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ConfigError(f"trainer.resume: {path}: not a weights-only Lightning checkpoint "
                          f"({exc.__class__.__name__}: {reason[:200]})") from None
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise ConfigError(f"trainer.resume: {path}: not a Lightning checkpoint (no 'state_dict')")
    return path.resolve()


def _fit(module: HSIClassificationModule, data: PixelDataModule, cfg: Any, out_dir: Path) -> HistoryCallback:
    """Fit ``module`` with the config's Lightning options; ``last.ckpt`` saved every epoch."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    tr = cfg.trainer
    validate = bool(tr.eval_every and tr.eval_every > 0)
    history = HistoryCallback()
    checkpointing = ModelCheckpoint(
        dirpath=out_dir, filename="last", save_top_k=1, every_n_epochs=1,
        save_on_train_epoch_end=True, enable_version_counter=False,
    )
    trainer = make_trainer(
        tr, out_dir, callbacks=[history, checkpointing], max_epochs=tr.epochs, deterministic=tr.deterministic,
        enable_checkpointing=True, num_sanity_val_steps=0, limit_val_batches=1.0 if validate else 0,
        check_val_every_n_epoch=tr.eval_every if validate else 1,
    )
    if tr.deterministic:
        # Deterministic kernels, but no NaN-filling of every torch.empty (a debugging aid that
        # Lightning's deterministic mode switches on and that nearly doubles a CPU training step).
        torch.utils.deterministic.fill_uninitialized_memory = False
    # verified again here for callers of _fit that did not go through train_patch_model
    import warnings

    with warnings.catch_warnings():
        # the run folder already holds config.yaml (written when the run starts), not stale checkpoints
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        trainer.fit(module, datamodule=data, ckpt_path=resume_checkpoint(tr.resume), weights_only=True)
    if trainer.global_rank != 0:
        # A DDP process that Lightning launched by re-running the command (strategy=ddp, or a
        # SLURM/torchrun task): its share of training is done; rank 0 writes model.pt and the run folder.
        raise SystemExit(0)
    return history


def _checkpoint(scene: Any, cfg: Any, model: nn.Module, args: dict[str, Any]) -> PatchCheckpoint:
    """The weights-only ``model.pt`` content: weights, input normalisation, classes, patch geometry."""
    from geolesf.config import to_dict

    return PatchCheckpoint(
        model=model,
        model_name=cfg.model.name,
        model_args=args,
        patch_size=cfg.data.patch_size,
        padding=cfg.data.padding,
        band_mean=None if scene.normalizer is None else scene.normalizer.mean,
        band_std=None if scene.normalizer is None else scene.normalizer.std,
        pca_components=None if scene.pca is None else scene.pca._pca.components_,
        pca_mean=None if scene.pca is None else scene.pca._pca.mean_,
        class_ids=scene.class_ids,
        class_names=scene.class_names,
        colors=[list(map(int, c)) for c in scene.class_colors],
        extra={"split": scene.split.name, "seed": int(cfg.trainer.seed), "epochs": int(cfg.trainer.epochs),
               "bands_in": int(scene.cube.bands), "config": to_dict(cfg), "bands": scene.info.get("bands")},
    )


@register_trainer("pixel")
def train_patch_model(scene: Any, cfg: Any, out_dir: Path) -> PatchPredictor:
    """Train a registry ``hsi-patch`` model (S²Mamba) on the scene's training pixels.

    Writes ``model.pt`` (weights-only checkpoint), ``last.ckpt`` (Lightning, for ``--resume``),
    ``history.json`` and ``curves.png`` into ``out_dir``.
    """
    tr = cfg.trainer
    resume_checkpoint(tr.resume)  # refuse a URL or unsafe file before the run folder is written
    out_dir = start_run(out_dir, tr)
    data = PixelDataModule(scene, cfg.data.patch_size, cfg.data.padding, tr.batch_size, tr.seed)
    args = _model_args(cfg, scene)
    # each step's activations and gradients (tens of MB at batch 64) stay in the heap instead of
    # being faulted in afresh every step (geolesf.predict.batching; GEOLESF_MMAP_THRESHOLD=0 disables)
    pin_mmap_threshold(kind="pixel")
    module = HSIClassificationModule(cfg.model.name, args, lr=tr.lr, weight_decay=tr.weight_decay, gamma=tr.gamma)
    history = _fit(module, data, cfg, out_dir)

    model = module.model.cpu().eval()
    digest = save_patch_checkpoint(out_dir / "model.pt", _checkpoint(scene, cfg, model, args))
    write_json(out_dir / "history.json", history.history)
    _plot_history(out_dir / "curves.png", history.history, f"{cfg.model.name} · split {scene.split.name}")
    print(f"[{cfg.model.name}] wrote {out_dir / 'model.pt'} (sha256 {digest[:12]}…)")
    return PatchPredictor(model, data.gather)
