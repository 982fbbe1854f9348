"""``--tile auto``: the tile side and batch of a dense model from a memory budget, least overlap waste first.

Overlapping tiles compute some pixels twice: a ``t``-pixel tile overlapping by ``o`` covers a side of
``n`` pixels with ``ceil((n - o) / (t - o))`` tiles (:func:`geolesf.predict.blend.tile_starts`), so the
model computes ``tiles × t`` pixels per side, and the *waste* of a tiling is computed pixels over scene
pixels (1.0 = none; 512/64 tiles on an 8,192² scene: 1.41). Larger tiles waste less, but how much
less depends on how the tile count rounds: 1,440 px tiles cover 8,192 px with 6 tiles (waste 1.11),
1,408 px tiles need 7 (1.31). :func:`choose_tile` therefore tries every multiple of the model's size
divisor from 256 px up to the scene side, keeps those whose memory fits the budget and takes the
least waste (the smallest such tile on a tie within 0.1 %), then the largest batch that still fits,
at most :data:`PIXELS_PER_FORWARD` pixels per forward (512² × 8, the work of the benchmarks' batch) and
at most the tiles of one tile row.

Not modelled: speed per computed pixel. Tiles much larger than the CPU caches make the blending and
accumulation (a few elementwise passes per tile) memory-bound; for a model cheap per pixel (the compact
``unet``, 5 kFLOP/px) that cost what the smaller waste saved, for an expensive one (smp U-Net-ResNet18,
166 kFLOP/px) auto ran 1.7× faster than 512-px tiles (``benchmarks/README.md``). Hence not the default.

Memory of one choice (bytes, :func:`tile_bytes`) — what the predictor holds for its tiles, on top of
the process itself (Python, torch, the model's weights):

* per pixel of every tile in a batch: the model's forward (``act_px``: the peak of the tensors alive
  during a forward plus softmax, per input pixel), the batch input buffer and the normalised tile
  (``2 × 4 × bands``) and the output buffer (``4 × classes``);
* per pixel of one tile: the float32 accumulator, the masked blending window and the cached windows
  of the nine tile positions (corner, edge, interior: ``4 × (classes + 1 + 1 + 9)``);
* per column of the scene: the finished row band (``tile`` bytes) and the carry to the next tile row
  (at most ``2 × overlap`` rows of ``classes + 1`` float32).

``act_px`` is *measured*, not estimated from the architecture: :func:`probe_activation_bytes` runs one
forward of a small zero tile (128 px or the next multiple of the size divisor) under a
``TorchDispatchMode`` that adds up the bytes of every tensor the forward creates while it is alive and
records the peak. This counts what PyTorch allocates for the forward (skip connections kept alive
included), independent of the heap's state; oneDNN's internal scratch buffers are not tensors and are
not counted (the default budget, a share of the available memory, leaves room for them). Modules that
are not PyTorch (ONNX Runtime sessions) cannot be probed.

The default budget (:func:`default_budget`) is a quarter of the available memory (``psutil`` if
installed, else ``/proc/meminfo``), at most 1 GiB: beyond ~1.5 Mpx tiles the waste on large scenes
shrinks by a few percent only, while peak memory keeps growing.

Per-pixel patch models (S²Mamba) do not overlap: each pixel is classified once from its neighbourhood,
so there is no waste to minimise and ``auto`` keeps their 512 px tile (it only sizes the read window).

This module imports neither torch nor rasterio at import time.
"""

from __future__ import annotations

import re
import sys
import weakref
from dataclasses import dataclass
from typing import Any

from geolesf.errors import ConfigError
from geolesf.predict.blend import tile_starts

MIN_TILE = 256
PIXELS_PER_FORWARD = 8 * 512 * 512
DEFAULT_BUDGET_CAP = 1 << 30
BUDGET_SHARE = 0.25
PIXEL_MODEL_TILE = 512
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class TileChoice:
    """A tile side and batch for one scene, with what they cost."""

    tile: int
    batch: int
    waste: float
    """Computed pixels (padding to the size divisor included) over scene pixels."""
    tiles: int
    memory: int
    """Bytes the tiles in flight take (:func:`tile_bytes`)."""
    budget: int

    def describe(self) -> str:
        return (f"--tile auto: tile {self.tile}, batch {self.batch} ({self.tiles} tiles, computed/scene pixels "
                f"{self.waste:.3f}, ~{self.memory / 2**20:,.0f} MiB of a {self.budget / 2**20:,.0f} MiB budget)")


def parse_size(text: str | int) -> int:
    """Bytes of ``"2GiB"``, ``"512M"``, ``"1.5 GB"``, ``"65536"``: k/M/G/T are powers of 1024 (``GiB``
    and ``GB`` alike, as memory is counted); a bad size is a one-line :class:`ConfigError`."""
    if isinstance(text, int):
        value = text
    else:
        m = _SIZE.match(str(text))
        if not m:
            raise ConfigError(f"--memory-budget: expected a size such as 2GiB, 512MiB or 1500000000, found {text!r}")
        value = int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2).lower() or " "))
    if value <= 0:
        raise ConfigError(f"--memory-budget must be more than 0 bytes, found {text!r}")
    return value


def available_memory() -> int | None:
    """Bytes of memory available to new allocations: psutil, else MemAvailable of /proc/meminfo."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def default_budget() -> int:
    """A quarter of the available memory, at most 1 GiB (1 GiB when it cannot be read)."""
    avail = available_memory()
    return DEFAULT_BUDGET_CAP if avail is None else int(min(DEFAULT_BUDGET_CAP, BUDGET_SHARE * avail))


def _padded(n: int, divisor: int) -> int:
    return -(-n // divisor) * divisor


def axis_work(n: int, tile: int, overlap: int, divisor: int = 1) -> tuple[int, int]:
    """``(tiles, computed pixels)`` along one scene side of ``n`` pixels."""
    count = len(tile_starts(n, tile, overlap))
    return count, count * _padded(min(tile, n), divisor)


def waste(height: int, width: int, tile: int, overlap: int, divisor: int = 1) -> float:
    """Computed pixels over scene pixels for ``tile``/``overlap`` tiles of a ``height × width`` scene."""
    _, hy = axis_work(height, tile, overlap, divisor)
    _, wx = axis_work(width, tile, overlap, divisor)
    return hy * wx / (height * width)


def tile_bytes(th: int, tw: int, batch: int, *, act_px: float, bands: int, classes: int, width: int,
               overlap: int, divisor: int = 1) -> int:
    """Bytes the predictor holds for a batch of ``th × tw`` tiles (see the module docstring)."""
    ph, pw = _padded(th, divisor), _padded(tw, divisor)
    per_px = act_px + 8 * bands + 4 * classes
    return int(batch * ph * pw * per_px + th * tw * 4 * (classes + 11)
               + width * (th + 4 * (classes + 1) * 2 * overlap))


def choose_tile(height: int, width: int, *, overlap: int, divisor: int, act_px: float, bands: int, classes: int,
                budget: int, batch: int | None = None) -> TileChoice:
    """The tile (a multiple of ``divisor`` ≥ 256, at most the scene's longer side rounded up) with the
    least waste whose memory at ``batch`` (1 when ``None``) fits ``budget``, then the batch (``batch``
    when given, else the largest that fits, ≤ :data:`PIXELS_PER_FORWARD` px and ≤ the tiles of a row)."""
    d = max(1, int(divisor))
    lo = max(_padded(MIN_TILE, d), _padded(2 * overlap + 1, d))
    hi = max(lo, _padded(max(height, width), d))
    fixed = batch or 1
    best: tuple[float, int] | None = None
    for t in range(lo, hi + 1, d):
        th, tw = min(t, height), min(t, width)
        need = tile_bytes(th, tw, fixed, act_px=act_px, bands=bands, classes=classes, width=width,
                          overlap=overlap, divisor=d)
        if need > budget:
            continue
        w = waste(height, width, t, overlap, d)
        if best is None or w < best[0] * (1 - 1e-3):
            best = (w, t)
    if best is None:
        need = tile_bytes(min(lo, height), min(lo, width), fixed, act_px=act_px, bands=bands, classes=classes,
                          width=width, overlap=overlap, divisor=d)
        raise ConfigError(f"--memory-budget {budget / 2**20:,.0f} MiB is too small: the smallest tile ({lo} px, "
                          f"batch {fixed}) needs {need / 2**20:,.0f} MiB; raise it or give --tile")
    w, t = best
    th, tw = min(t, height), min(t, width)
    n_rows, _ = axis_work(height, t, overlap, d)
    n_cols, _ = axis_work(width, t, overlap, d)
    if batch is None:
        batch = 1
        cap = min(n_cols, max(1, PIXELS_PER_FORWARD // (_padded(th, d) * _padded(tw, d))))
        while batch < cap and tile_bytes(th, tw, batch + 1, act_px=act_px, bands=bands, classes=classes,
                                         width=width, overlap=overlap, divisor=d) <= budget:
            batch += 1
    need = tile_bytes(th, tw, batch, act_px=act_px, bands=bands, classes=classes, width=width, overlap=overlap,
                      divisor=d)
    return TileChoice(tile=t, batch=batch, waste=w, tiles=n_rows * n_cols, memory=need, budget=int(budget))


def probe_activation_bytes(module: Any, bands: int, divisor: int = 1, device: str = "cpu",
                           softmax: bool = True) -> float:
    """Peak bytes of live tensors per input pixel of one forward (plus softmax) of ``module`` on a zero
    ``(1, bands, s, s)`` tile, ``s`` = 128 rounded up to ``divisor`` (see the module docstring)."""
    import torch
    from torch import nn
    from torch.utils._pytree import tree_leaves
    from torch.utils._python_dispatch import TorchDispatchMode

    if not isinstance(module, nn.Module):
        raise ConfigError(f"--tile auto: cannot measure the memory of a {type(module).__name__} (not a PyTorch "
                          "module, e.g. an ONNX Runtime model); give --tile")
    s = _padded(128, max(1, divisor))
    x = torch.zeros(1, bands, s, s, device=device)
    skip = {p.untyped_storage().data_ptr() for p in [*module.parameters(), *module.buffers()]}
    skip.add(x.untyped_storage().data_ptr())

    class LiveBytes(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.size: dict[int, int] = {}
            self.refs: dict[int, int] = {}
            self.now = self.peak = 0

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            out = func(*args, **(kwargs or {}))
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    self._track(t)
            return out

        def _track(self, t: Any) -> None:
            st = t.untyped_storage()
            key, nbytes = st.data_ptr(), st.nbytes()
            if not nbytes or key in skip:
                return
            if key not in self.refs:
                self.refs[key], self.size[key] = 0, nbytes
                self.now += nbytes
                self.peak = max(self.peak, self.now)
            self.refs[key] += 1
            weakref.finalize(t, self._drop, key)

        def _drop(self, key: int) -> None:
            self.refs[key] -= 1
            if not self.refs[key]:
                del self.refs[key]
                self.now -= self.size.pop(key)

    tracker = LiveBytes()
    try:
        with torch.inference_mode(), tracker:
            y = module(x)
            if softmax:
                y = y.softmax(1)
            del y
    except (RuntimeError, ValueError) as exc:  # e.g. a model that only takes one input size
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--tile auto: the probe forward of a {s}-px tile failed ({first}); give --tile") from None
    return tracker.peak / (s * s)


def auto_tile(pm: Any, height: int, width: int, bands: int, *, overlap: int, budget: int | None,
              batch: int | None, device: str = "cpu", softmax: bool = True, verbose: bool = False) -> TileChoice:
    """:func:`choose_tile` for a dense :class:`~geolesf.predict.model.PredictModel` on a scene whose model
    input has ``bands`` bands, the model probed; ``budget`` ``None``: :func:`default_budget`. ``verbose``
    prints the choice to stderr."""
    act = probe_activation_bytes(pm.module, bands, pm.size_divisor, device, softmax)
    choice = choose_tile(height, width, overlap=overlap, divisor=max(1, pm.size_divisor), act_px=act, bands=bands,
                         classes=len(pm.class_ids), budget=default_budget() if budget is None else int(budget),
                         batch=batch)
    if verbose:
        print(choice.describe(), file=sys.stderr)
    return choice

