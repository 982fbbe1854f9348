"""Train/test split generators for per-pixel hyperspectral classification.

A :class:`Split` is two boolean ``(H, W)`` masks over a label map (0 = unlabelled) plus the name
and parameters that reproduce it. Generators (all stratified by class and seeded):

- :func:`random_split` — a fraction of each class at random (e.g. 10 % on Indian Pines);
- :func:`count_split` — a fixed number per class, capped at ``max_fraction`` of small classes;
- :func:`fixed_split` — pre-defined maps (the SpectralFormer / S²Mamba ``TR``/``TE`` maps);
- :func:`dase_split` — the IEEE GRSS DASE spatially disjoint Indian Pines training mask;
- :func:`disjoint_split` — whole square blocks to train, test pixels near them dropped.

Random pixel splits leak: a test pixel's P×P patch usually contains training pixels, which
inflates accuracy of patch-based models. :func:`leakage_report` measures it for every split.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.errors import DataError

#: DASE Indian Pines training mask (``indianpines_ts.tif``) class order → standard ids.
DASE_INDIAN_PINES_REMAP: dict[int, int] = {
    1: 2, 2: 3, 3: 5, 4: 6, 5: 8, 6: 10, 7: 11, 8: 12,
    9: 14, 10: 1, 11: 4, 12: 7, 13: 9, 14: 13, 15: 15, 16: 16,
}

#: SpectralFormer fixed Indian Pines maps (``IndianTR123_temp123.tif`` / ``IndianTE…``) → standard ids.
SPECTRALFORMER_INDIAN_PINES_REMAP: dict[int, int] = {
    1: 2, 2: 3, 3: 4, 4: 5, 5: 6, 6: 8, 7: 10, 8: 11,
    9: 12, 10: 13, 11: 14, 12: 15, 13: 16, 14: 1, 15: 7, 16: 9,
}


@dataclass
class Split:
    """Train and test pixel masks over a scene."""

    train: np.ndarray
    """``(H, W)`` bool, True = training pixel."""
    test: np.ndarray
    """``(H, W)`` bool, True = test pixel (never also a training pixel)."""
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    labels: np.ndarray | None = None
    """The split's own label map when it defines labels (fixed ``TR``/``TE`` maps); else None
    and labels come from the ground truth."""

    def __post_init__(self) -> None:
        self.train = np.asarray(self.train, dtype=bool)
        self.test = np.asarray(self.test, dtype=bool)
        if self.train.shape != self.test.shape or self.train.ndim != 2:
            raise DataError(
                f"split '{self.name}': train mask {self.train.shape} and test mask "
                f"{self.test.shape} must be the same 2-D shape"
            )
        both = int(np.count_nonzero(self.train & self.test))
        if both:
            raise DataError(f"split '{self.name}': {both} pixels are in both train and test")

    def label_map(self, labels: np.ndarray) -> np.ndarray:
        """The labels to train and score with: the split's own map, else ``labels``."""
        return self.labels if self.labels is not None else labels

    def counts(self, labels: np.ndarray) -> dict[str, dict[int, int]]:
        """Pixels per class id in train and test."""
        lab = self.label_map(labels)
        out = {}
        for part, mask in (("train", self.train), ("test", self.test)):
            ids, n = np.unique(lab[mask], return_counts=True)
            out[part] = {int(i): int(c) for i, c in zip(ids, n)}
        return out

    def to_dict(self, labels: np.ndarray) -> dict[str, Any]:
        counts = self.counts(labels)
        return {
            "name": self.name,
            "params": _jsonable(self.params),
            "train_pixels": int(self.train.sum()),
            "test_pixels": int(self.test.sum()),
            "counts": {k: {str(c): n for c, n in v.items()} for k, v in counts.items()},
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _classes(labels: np.ndarray) -> list[int]:
    return [int(c) for c in np.unique(labels) if c > 0]


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise DataError(f"labels must be a 2-D map, found shape {labels.shape}")
    if not _classes(labels):
        raise DataError("labels contain no labelled pixel (all values ≤ 0)")
    return labels


def _stratified(
    labels: np.ndarray,
    n_train: Callable[[int], int],
    seed: int,
    name: str,
    params: dict,
    explain: Callable[[int], str],
    min_train: int = 1,
) -> Split:
    """``n_train(pixels)`` random pixels of every class to train, the rest to test.

    A class left with fewer than ``min_train`` training pixels or no test pixel is an error
    whose message ends with ``explain(k)``.
    """
    rng = np.random.default_rng(seed)
    flat = labels.ravel()
    train = np.zeros(flat.shape, dtype=bool)
    for c in _classes(labels):
        idx = np.flatnonzero(flat == c)
        k = n_train(idx.size)
        if k >= idx.size or k < min_train:
            raise DataError(f"{name} split: class {c} has {idx.size} pixels; {explain(k)}")
        train[rng.permutation(idx)[:k]] = True
    train = train.reshape(labels.shape)
    return Split(train, (labels > 0) & ~train, name, params)


def random_split(
    labels: np.ndarray, fraction: float = 0.1, seed: int = 0, min_per_class: int = 1
) -> Split:
    """``fraction`` of every class (rounded, at least ``min_per_class``) to train, rest to test."""
    labels = _check_labels(labels)
    if not 0 < fraction < 1:
        raise DataError(f"random split: train fraction must be in (0, 1), found {fraction}")
    params = {"fraction": fraction, "seed": seed, "min_per_class": min_per_class}
    return _stratified(
        labels, lambda n: max(int(min_per_class), int(round(fraction * n))), seed, "random", params,
        lambda k: (f"fraction {fraction} with min_per_class {min_per_class} needs {k} for training "
                   "and at least 1 for testing"),
        min_train=0,
    )


def count_split(
    labels: np.ndarray, per_class: int, seed: int = 0, max_fraction: float = 0.5
) -> Split:
    """``per_class`` training pixels per class, at most ``max_fraction`` of a small class."""
    labels = _check_labels(labels)
    if per_class < 1:
        raise DataError(f"count split: per_class must be ≥ 1, found {per_class}")
    params = {"per_class": per_class, "seed": seed, "max_fraction": max_fraction}
    return _stratified(
        labels, lambda n: min(int(per_class), int(np.floor(max_fraction * n))), seed, "count", params,
        lambda k: f"{per_class} per class capped at {max_fraction:.0%} leaves {k} for training",
    )


def apply_remap(arr: np.ndarray, remap: Mapping[int, int] | None, where: str = "split map") -> np.ndarray:
    """Map class ids of ``arr`` through ``remap`` (0 stays 0); an unmapped id is an error."""
    arr = np.asarray(arr).astype(np.int64)
    if not remap:
        return arr
    ids = [int(i) for i in np.unique(arr) if i > 0]
    missing = [i for i in ids if int(i) not in {int(k) for k in remap}]
    if missing:
        raise DataError(f"{where}: class ids {missing} are not in the remap table {dict(remap)}")
    out = np.zeros_like(arr)
    for src, dst in remap.items():
        out[arr == int(src)] = int(dst)
    return out


def _same_shape(labels: np.ndarray, other: np.ndarray, what: str) -> None:
    if other.shape != labels.shape:
        raise DataError(f"{what} has shape {other.shape}; the labels have shape {labels.shape}")


def fixed_split(
    labels: np.ndarray,
    train_map: np.ndarray,
    test_map: np.ndarray | None = None,
    remap: Mapping[int, int] | None = None,
) -> Split:
    """A pre-defined split: training pixels = ``train_map > 0``.

    With ``test_map`` the test pixels are ``test_map > 0`` and the maps' own (remapped) class ids
    are the labels of their pixels (the SpectralFormer ``TR``/``TE`` protocol, where a few split
    pixels lie on the ground truth's background). Without it, test = labelled pixels not in train.
    """
    labels = _check_labels(labels)
    tr = apply_remap(train_map, remap, "train map")
    _same_shape(labels, tr, "train map")
    train = tr > 0
    params: dict[str, Any] = {"remap": dict(remap) if remap else None}
    own = labels.astype(np.int64).copy()
    own[train] = tr[train]
    if test_map is not None:
        te = apply_remap(test_map, remap, "test map")
        _same_shape(labels, te, "test map")
        test = te > 0
        own[test] = te[test]
    else:
        test = (labels > 0) & ~train
    split_px = train | test
    params["pixels_on_unlabelled_ground_truth"] = int(np.count_nonzero(split_px & (labels <= 0)))
    params["pixels_disagreeing_with_ground_truth"] = int(
        np.count_nonzero(split_px & (labels > 0) & (own != labels))
    )
    return Split(train, test, "fixed", params, labels=own)


def dase_split(
    labels: np.ndarray, mask: np.ndarray, remap: Mapping[int, int] | None = DASE_INDIAN_PINES_REMAP
) -> Split:
    """The DASE disjoint training mask: train = mask ∩ labelled ground truth, test = the rest.

    Mask pixels on unlabelled background are dropped and training labels always come from the
    ground truth (the mask has a few pixels with the wrong class); both are counted in ``params``.
    """
    labels = _check_labels(labels)
    m = apply_remap(mask, remap, "DASE mask")
    _same_shape(labels, m, "DASE mask")
    on_mask = m > 0
    train = on_mask & (labels > 0)
    test = (labels > 0) & ~train
    params = {
        "remap": dict(remap) if remap else None,
        "mask_pixels": int(on_mask.sum()),
        "dropped_on_background": int(np.count_nonzero(on_mask & (labels <= 0))),
        "class_disagreements_fixed_from_ground_truth": int(np.count_nonzero(train & (m != labels))),
    }
    return Split(train, test, "dase", params)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    from scipy.ndimage import binary_dilation

    if radius <= 0:
        return mask.copy()
    return binary_dilation(mask, structure=np.ones((2 * radius + 1, 2 * radius + 1), dtype=bool))


def disjoint_split(
    labels: np.ndarray,
    block_size: int = 16,
    train_fraction: float = 0.1,
    buffer: int = 3,
    seed: int = 0,
) -> Split:
    """Spatially disjoint split from whole square blocks.

    The scene is cut into ``block_size`` squares. Classes are visited rarest first; for each,
    random blocks holding it go to train until ``train_fraction`` of its pixels are reached,
    skipping a block that (with its buffer) would leave some class without test pixels, unless
    the class would otherwise get no training pixel at all. Test pixels are the
    labelled pixels of the other blocks farther than ``buffer`` (Chebyshev distance) from every
    training pixel, so with ``buffer >= patch_size // 2`` no test patch sees a training pixel.
    """
    labels = _check_labels(labels)
    if block_size < 1:
        raise DataError(f"disjoint split: block_size must be ≥ 1, found {block_size}")
    if not 0 < train_fraction < 1:
        raise DataError(f"disjoint split: train fraction must be in (0, 1), found {train_fraction}")
    if buffer < 0:
        raise DataError(f"disjoint split: buffer must be ≥ 0, found {buffer}")
    h, w = labels.shape
    classes = _classes(labels)
    nbx = -(-w // block_size)
    rows, cols = np.indices(labels.shape)
    block = (rows // block_size) * nbx + cols // block_size
    n_blocks = int(block.max()) + 1
    cls_index = np.full(int(labels.max()) + 1, -1)
    cls_index[classes] = np.arange(len(classes))
    lab = labels > 0
    counts = np.zeros((n_blocks, len(classes)), dtype=np.int64)
    np.add.at(counts, (block[lab], cls_index[labels[lab]]), 1)
    totals = counts.sum(axis=0)
    present = counts > 0
    in_train = np.zeros(n_blocks, dtype=bool)
    rng = np.random.default_rng(seed)

    def test_counts(blocks: np.ndarray) -> np.ndarray:
        train = lab & blocks[block]
        test = lab & ~blocks[block] & ~_dilate(train, buffer)
        return np.bincount(cls_index[labels[test]], minlength=len(classes))

    current_test = test_counts(in_train)
    for k in np.argsort(totals, kind="stable"):
        target = max(1.0, train_fraction * totals[k])
        candidates = [b for b in rng.permutation(np.flatnonzero(present[:, k])) if not in_train[b]]
        for b in candidates:
            if counts[in_train, k].sum() >= target:
                break
            trial = in_train.copy()
            trial[b] = True
            after = test_counts(trial)
            if np.any((current_test > 0) & (after == 0)):
                continue  # b would leave some class without test pixels
            in_train, current_test = trial, after
        if counts[in_train, k].sum() == 0 and candidates:
            # No block keeps test pixels for everyone: training pixels matter more.
            in_train[candidates[0]] = True
            current_test = test_counts(in_train)
    train = lab & in_train[block]
    test = lab & ~in_train[block] & ~_dilate(train, buffer)
    warnings = []
    for k, c in enumerate(classes):
        if not train[labels == c].any():
            warnings.append(f"class {c} has no training pixels")
        if not test[labels == c].any():
            warnings.append(f"class {c} has no test pixels")
    params = {
        "block_size": block_size, "train_fraction": train_fraction, "buffer": buffer,
        "seed": seed, "train_blocks": int(in_train.sum()), "blocks": n_blocks,
        "dropped_in_buffer": int(np.count_nonzero(lab & ~in_train[block] & ~test)),
        "warnings": warnings,
    }
    return Split(train, test, "disjoint", params)


def leakage_report(split: Split, patch_size: int) -> dict[str, Any]:
    """How many test pixels' ``patch_size``² patches contain a training pixel.

    ``test_pixels_in_train`` (test pixels that are themselves training pixels) must be 0.
    """
    if patch_size < 1:
        raise DataError(f"patch size must be ≥ 1, found {patch_size}")
    near = _dilate(split.train, patch_size // 2)
    n_test = int(split.test.sum())
    leaking = int(np.count_nonzero(split.test & near))
    return {
        "patch_size": int(patch_size),
        "test_pixels": n_test,
        "test_patches_with_train_pixels": leaking,
        "fraction": leaking / n_test if n_test else 0.0,
        "test_pixels_in_train": int(np.count_nonzero(split.test & split.train)),
    }


# --------------------------------------------------------------------------------------------
# dispatcher


def _read_map(spec: str) -> np.ndarray:
    from geolesf.io.hsi import read_labels

    return read_labels(spec).data


def _fixed_maps(cfg: Any) -> tuple[np.ndarray, np.ndarray | None]:
    if not cfg.train_map:
        raise DataError("fixed split: set data.train_map (and data.test_map, or a .mat holding TR and TE)")
    from geolesf.io.hsi import _load_mat, split_spec

    path, key = split_spec(cfg.train_map)
    if cfg.test_map is None and key is None and path.suffix.lower() == ".mat" and path.is_file():
        arrays = _load_mat(path)
        if "TR" in arrays and "TE" in arrays:
            return arrays["TR"], arrays["TE"]
    train = _read_map(cfg.train_map)
    test = _read_map(cfg.test_map) if cfg.test_map else None
    return train, test


def make_split(cfg: Any, labels: np.ndarray, seed: int = 0, patch_size: int | None = None) -> Split:
    """Build the split named by ``cfg.split`` (a :class:`~geolesf.config.DataConfig`)."""
    name = str(cfg.split).lower()
    patch = int(patch_size if patch_size is not None else getattr(cfg, "patch_size", 1))
    if name == "random":
        return random_split(labels, cfg.train_fraction, seed, cfg.min_per_class)
    if name == "count":
        if cfg.per_class is None:
            raise DataError("count split: set data.per_class (e.g. --per-class 50)")
        return count_split(labels, cfg.per_class, seed)
    if name == "fixed":
        train, test = _fixed_maps(cfg)
        return fixed_split(labels, train, test, cfg.remap)
    if name == "dase":
        from geolesf.paths import embedded_data_root

        spec = cfg.train_map or str(embedded_data_root() / "indian_pines" / "indianpines_ts.tif")
        remap = cfg.remap if cfg.remap is not None else DASE_INDIAN_PINES_REMAP
        split = dase_split(labels, _read_map(spec), remap)
        split.params["mask"] = Path(spec).name
        return split
    if name == "disjoint":
        buffer = cfg.buffer if cfg.buffer is not None else patch // 2
        return disjoint_split(labels, cfg.block_size, cfg.train_fraction, buffer, seed)
    raise DataError(f"unknown split '{cfg.split}' (choose random, count, fixed, dase or disjoint)")


SPLITS = ("random", "count", "fixed", "dase", "disjoint")
