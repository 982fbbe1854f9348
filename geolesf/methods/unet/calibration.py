"""Re-estimate a model's BatchNorm statistics on the training scene after training.

BatchNorm layers keep running averages (momentum 0.1) of the batch statistics seen in training; when
the weights still move fast at the end of a short run — as under the large, sparse gradients of the
box projection loss — those averages lag behind the final weights, and the evaluation-mode network
(the one the checkpoint predicts with) differs from the training-mode one. Measured on the SpaceNet
box runs: 24 % of the pixels outside every box predicted "building" in evaluation mode against 7 % in
training mode, same weights. :func:`recalibrate_batchnorm` resets the statistics and recomputes them as
a cumulative average over chips tiling the scene, with the final weights (the ``bn_update`` of
stochastic weight averaging, Izmailov et al. 2018). Weights are unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def recalibrate_batchnorm(model: nn.Module, image: np.ndarray, chip: int, *, device: str = "cpu",
                          batch_size: int = 8, max_chips: int = 64, seed: int = 0) -> int:
    """Recompute the BatchNorm running statistics of ``model`` over chips of ``image`` ``(bands, H, W)``
    (normalised as in training): a grid of ``chip``-px windows, at most ``max_chips`` drawn with ``seed``.
    Returns the number of chips used (0 when the model has no BatchNorm layer)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    _, h, w = image.shape
    c = min(chip, h, w)
    windows = [(y, x) for y in range(0, h - c + 1, c) for x in range(0, w - c + 1, c)]
    if len(windows) > max_chips:
        pick = np.random.default_rng(seed).choice(len(windows), max_chips, replace=False)
        windows = [windows[i] for i in sorted(pick)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    was_training = model.training
    model.train()
    with torch.no_grad():
        for i in range(0, len(windows), batch_size):
            part = windows[i:i + batch_size]
            xb = torch.from_numpy(np.stack([image[:, y:y + c, x:x + c] for y, x in part])).to(device)
            model(xb)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)
    return len(windows)
