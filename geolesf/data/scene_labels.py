"""The labels of a hyperspectral run and its split: raster or vector labels, test labels, block folds.

:func:`scene_labels` turns ``data.labels`` into a label map on the cube's grid and builds the split:

- ``data.labels`` is a label raster on the cube's grid, or a vector file (by suffix,
  :data:`geolesf.io.labels.VECTOR_SUFFIXES`) burnt onto the cube's grid by
  :func:`geolesf.io.labels.burn_vector_labels` (``data.label_field``, ``data.all_touched``; class names
  of a names field become the legend; ``data.class_names`` gives their ids when set);
- ``data.test_labels`` (raster or vector): training pixels are the labelled pixels of ``data.labels``,
  test pixels those of the test labels (split ``labels``). A pixel labelled in both stays a training
  pixel and is left out of the test set (a pixel trained on says nothing about the model; counted as
  ``pixels_in_both``); test classes unknown to the training labels cannot be predicted, so
  their pixels are left out of the test set and reported (``unknown_test_classes``);
- ``data.cv_blocks`` K with ``data.cv_fold`` f: fold f of the spatial block cross-validation
  (:mod:`geolesf.data.block_cv`, buffer ``data.buffer`` or the patch radius);
- otherwise ``data.split`` (:func:`geolesf.data.splits.make_split`).

A vector label file needs a georeferenced cube (a CRS and a transform): without one it is a
:class:`~geolesf.errors.DataError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.data.splits import Split, make_split
from geolesf.errors import ConfigError, DataError
from geolesf.io.cube import HSICube, LabelMap, drop_invalid_labels
from geolesf.io.labels import burn_vector_labels, is_vector


@dataclass
class SceneLabels:
    """Ground truth on the cube's grid, its split, class names from a names field, and the report."""

    ground_truth: LabelMap
    split: Split
    class_names: dict[int, str] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _read(spec: str, data: Any, cube: HSICube, name_to_id: dict[str, int] | None,
          what: str) -> tuple[LabelMap, dict[int, str], dict[str, Any], list[str]]:
    """One label source on the cube's grid: ``(labels, names, vector report, notes)``."""
    from geolesf.io.hsi import read_labels

    if is_vector(spec):
        if not data.label_field:
            raise ConfigError(f"{what} {spec} is a vector file: name the attribute holding each feature's class "
                              "with data.label_field (--label-field NAME)")
        burned = burn_vector_labels(spec, crs=cube.crs, transform=cube.transform, shape=tuple(cube.shape[:2]),
                                    field=data.label_field, all_touched=bool(data.all_touched),
                                    name_to_id=name_to_id, where=f"cube {cube.path}")
        arr = np.where(burned.data > 0, burned.data, 0).astype(np.int32)
        gt = LabelMap(data=arr, crs=cube.crs, transform=cube.transform, path=str(spec))
        return gt, burned.names, burned.report, burned.notes()
    gt = read_labels(spec)
    if tuple(gt.shape) != tuple(cube.shape[:2]):
        raise DataError(
            f"{what} {gt.path} have shape {gt.shape} but cube {cube.path} is "
            f"{cube.shape[0]}×{cube.shape[1]} (×{cube.shape[2]} bands); "
            "they must cover the same pixels"
        )
    return gt, {}, {}, []


def labels_split(train_labels: np.ndarray, test_labels: np.ndarray, test_spec: str,
                 names: dict[int, str] | None = None) -> Split:
    """Training pixels from ``train_labels``, test pixels from ``test_labels`` (module docstring)."""
    train_ids = {int(c) for c in np.unique(train_labels) if c > 0}
    if not train_ids:
        raise DataError("the training labels hold no labelled pixel")
    test_all = test_labels > 0
    unknown = sorted({int(c) for c in np.unique(test_labels[test_all])} - train_ids)
    known = test_all & np.isin(test_labels, sorted(train_ids))
    train = train_labels > 0
    both = train & known
    test = known & ~both
    own = np.where(train, train_labels, np.where(test, test_labels, 0)).astype(np.int64)
    names = names or {}
    params = {
        "test_labels": str(test_spec),
        "pixels_in_both": int(both.sum()),
        "pixels_in_both_disagreeing": int(np.count_nonzero(both & (train_labels != test_labels))),
        "unknown_test_classes": {str(c): {"pixels": int(np.count_nonzero(test_labels == c)),
                                          "name": names.get(c, f"class_{c}")} for c in unknown},
    }
    return Split(train, test, "labels", params, labels=own)


def _fold_split(data: Any, labels: np.ndarray, seed: int, patch_size: int) -> Split:
    from geolesf.data.block_cv import block_cv_split

    if data.test_labels:
        raise ConfigError("data.cv_blocks and data.test_labels exclude each other: cross-validation draws its "
                          "test pixels from data.labels")
    if data.cv_fold is None:
        raise ConfigError("data.cv_blocks: data.cv_fold (0..K-1) is not set; run the folds with geolesf train")
    buffer = data.buffer if data.buffer is not None else patch_size // 2
    return block_cv_split(labels, int(data.cv_blocks), int(data.cv_fold), data.block_size, buffer, seed)


def scene_labels(data: Any, cube: HSICube, seed: int = 0, patch_size: int = 1) -> SceneLabels:
    """Labels on ``cube``'s grid and the split ``data`` (a :class:`~geolesf.config.DataConfig`) asks for."""
    by_name = {str(v): int(k) for k, v in (data.class_names or {}).items()}
    gt, names, report, notes = _read(str(data.labels), data, cube, by_name or None, "labels")
    drop_invalid_labels(cube, gt)  # nodata / quality-flagged pixels of a sensor product are never labelled
    if report.get("new_names") and by_name:
        raise DataError(f"labels {data.labels}: class names {report['new_names']} are not in data.class_names "
                        f"({', '.join(sorted(by_name))})")
    out_report: dict[str, Any] = {"vector": report} if report else {}
    if data.cv_blocks:
        split = _fold_split(data, gt.data, seed, patch_size)
    elif data.test_labels:
        all_names = {**names, **{v: k for k, v in by_name.items()}}
        test_by_name = {n: i for i, n in all_names.items()} or None
        test, test_names, test_report, test_notes = _read(str(data.test_labels), data, cube, test_by_name,
                                                          "test labels")
        drop_invalid_labels(cube, test)
        if test_report.get("field_kind") == "names" and not all_names:
            raise DataError(f"test labels {data.test_labels} hold class names but the training labels {data.labels} "
                            "hold ids: name the ids with data.class_names")
        split = labels_split(gt.data, test.data, data.test_labels, {**test_names, **all_names})
        if test_report:
            out_report["test_vector"] = test_report
        notes += test_notes
        for cid, entry in split.params["unknown_test_classes"].items():
            notes.append(f"test labels {Path(str(data.test_labels)).name}: class {cid} ({entry['name']}, "
                         f"{entry['pixels']} px) is not in the training labels: left out of the test set")
        if split.params["pixels_in_both"]:
            notes.append(f"{split.params['pixels_in_both']} pixels are labelled in both label files: "
                         "kept for training, left out of the test set")
    else:
        split = make_split(data, gt.data, seed=seed, patch_size=patch_size)
    return SceneLabels(gt, split, names, out_report, notes)
