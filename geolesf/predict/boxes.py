"""Boxes detected tile by tile, merged into one set for the whole scene (cross-tile NMS).

A tiled detector (e.g. :mod:`geolesf.methods.wsod.inference`) reports each tile's boxes in scene
pixel coordinates as :class:`TileDetections`; :func:`merge_tile_detections` merges them per class
in the scene frame. A box that touches an interior tile edge (a side shared with a neighbouring
tile, not the scene border) is *truncated*; complete boxes are considered before truncated ones,
then by score, and a box is suppressed when it overlaps a kept box of the same class with IoU >
``merge_iou`` or — when one of the two is truncated and they come from different tiles — when
their intersection covers more than ``merge_ios`` of the smaller box. An object cut by a tile
border therefore yields one box: the complete one from the tile that contains it (or, for objects
larger than the overlap, the highest-scoring part).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TileDetections:
    """Detections of one tile, already in scene pixel coordinates."""

    row0: int
    col0: int
    height: int
    width: int
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


def _truncated(t: TileDetections, scene_h: int, scene_w: int, edge: float) -> np.ndarray:
    b = np.asarray(t.boxes, dtype=np.float64).reshape(-1, 4)
    r1, c1 = t.row0 + t.height, t.col0 + t.width
    cut = np.zeros(len(b), dtype=bool)
    if t.col0 > 0:
        cut |= b[:, 0] <= t.col0 + edge
    if t.row0 > 0:
        cut |= b[:, 1] <= t.row0 + edge
    if c1 < scene_w:
        cut |= b[:, 2] >= c1 - 1 - edge
    if r1 < scene_h:
        cut |= b[:, 3] >= r1 - 1 - edge
    return cut


def merge_tile_detections(tiles: list[TileDetections], scene_h: int, scene_w: int, merge_iou: float = 0.4,
                          merge_ios: float = 0.7, edge: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cross-tile NMS (see the module docstring) → ``(boxes, scores, labels)`` in scene pixels."""
    from geolesf.metrics.detection import box_iou

    boxes, scores, labels, trunc, tile_of = [], [], [], [], []
    for k, t in enumerate(tiles):
        boxes.append(np.asarray(t.boxes, dtype=np.float64).reshape(-1, 4))
        scores.append(np.asarray(t.scores, dtype=np.float64).reshape(-1))
        labels.append(np.asarray(t.labels, dtype=np.int64).reshape(-1))
        trunc.append(_truncated(t, scene_h, scene_w, edge))
        tile_of.append(np.full(len(boxes[-1]), k))
    if not boxes or sum(len(b) for b in boxes) == 0:
        return np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64)
    b, s, lab = np.concatenate(boxes), np.concatenate(scores), np.concatenate(labels)
    tr, tid = np.concatenate(trunc), np.concatenate(tile_of)
    keep_all = []
    for c in np.unique(lab):
        idx = np.flatnonzero(lab == c)
        order = idx[np.lexsort((-s[idx], tr[idx]))]  # complete first, then by score
        iou = box_iou(b[order], b[order], pixel_offset=0.0)
        bb = b[order]
        area = np.clip(bb[:, 2] - bb[:, 0], 0, None) * np.clip(bb[:, 3] - bb[:, 1], 0, None)
        inter = iou * (area[:, None] + area[None, :]) / np.maximum(1 + iou, 1e-12)
        ios = inter / np.maximum(np.minimum(area[:, None], area[None, :]), 1e-12)
        kept: list[int] = []
        for i in range(len(order)):
            dup = False
            for j in kept:
                if iou[i, j] > merge_iou:
                    dup = True
                elif (tr[order[i]] or tr[order[j]]) and tid[order[i]] != tid[order[j]] and ios[i, j] > merge_ios:
                    dup = True
                if dup:
                    break
            if not dup:
                kept.append(i)
        keep_all.extend(order[kept].tolist())
    keep = np.asarray(sorted(keep_all, key=lambda i: -s[i]), dtype=np.int64)
    return b[keep], s[keep], lab[keep]
