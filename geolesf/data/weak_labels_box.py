"""Boxes and noisy masks derived from full masks: a documented, seeded procedure for the weak-label benchmarks.

Both derivations take a full class mask ``(H, W)`` (class ids; ``ignore`` marks unlabelled pixels) and a
``seed``; the same inputs and seed give the same output, bit for bit (one ``numpy.random.default_rng(seed)``
drawn in a fixed order).

**Boxes** (:func:`boxes_from_mask`): one box per connected component (8-connectivity) of every class
except ``background`` and ``ignore``, components under ``min_pixels`` dropped. A box is in pixel-edge
coordinates ``[x0, y0, x1, y1]`` (``x1`` = right edge = last column + 1), tight around its component.
With ``jitter = j > 0`` each of the four edges moves independently by ``u · j · side`` with ``u`` uniform
in ``[−1, 1]`` and ``side`` the box's width (for x edges) or height (for y edges), then the box is
clipped to the image and kept at least one pixel wide and high: the annotator-noise model of box
benchmarks (a loose or tight box, never a different object). :func:`write_boxes_gpkg` writes them as a
GeoPackage of box polygons with a class field (what a GIS user draws), readable by
:func:`geolesf.data.supervision.boxes_from_vector`.

**Thing classes** (:func:`thing_mask`). Boxes are object labels: a GIS user has boxes for buildings, cars or
trees, not for roads or grass, whose connected components are as large as the scene (a box around a road
network covers everything, so no pixel is known to be background). For scenes with such "stuff" classes the
mask is first remapped: the chosen thing classes become ``1..k`` in the order given, every other class becomes
``0`` ("other", the background the boxes do not cover), the classes listed as ``ignore_classes`` (e.g. the
boundary band of the ISPRS labels) and ``ignore`` pixels become ``ignore``. The same remap is applied to the
training labels and to the evaluation mask; :func:`boxes_from_mask` then boxes the thing components only. The
remap draws nothing (the seed of :func:`boxes_from_mask` still governs the jitter).

**Noisy masks** (:func:`noisy_from_mask`). The objects are the connected components (8-connectivity) of
every class except ``background``/``ignore``; the steps run in this order:

1. **dropped objects**: exactly ``round(drop_share · N)`` objects, drawn without replacement, take the
   most common class of the pixels just outside them (their surroundings; ``background`` for a building
   in a building mask);
2. **wrong class**: exactly ``round(wrong_class_share · N)`` of the remaining objects take another class
   drawn uniformly from the mask's other non-background classes (when the mask has one such class only,
   there is no other class to give: those objects stay and the report says so);
3. **boundary**: every remaining object is eroded or dilated (a fair coin per object) by ``boundary_px``
   pixels (a square structuring element): an eroded rim takes the nearest pixel's class outside the
   object, a dilated rim overwrites the neighbouring labelled pixels with the object's class;
4. **spurious blobs**: ``round(spurious_share · N)`` discs of radius uniform in ``spurious_radius`` (px),
   centred uniformly on the image, of a class drawn uniformly from the non-background classes, painted
   over labelled pixels.

``ignore`` pixels stay ``ignore`` throughout. The report counts each step; :func:`write_noisy_tif` writes
the noisy map as a georeferenced class GeoTIFF with its ``.qml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geolesf.errors import DataError

_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass
class BoxLabels:
    """Boxes derived from a mask: ``boxes`` ``(N, 4)`` pixel-edge ``[x0, y0, x1, y1]``, their ``classes``
    ``(N,)`` and the pixel count of each box's component."""

    boxes: np.ndarray
    classes: np.ndarray
    pixels: np.ndarray


def components(mask: np.ndarray, *, background: int | None = 0, ignore: int | None = 255,
               min_pixels: int = 1) -> list[tuple[int, np.ndarray]]:
    """``[(class, bool component mask), …]``, 8-connected, ordered by class then by scan order."""
    from scipy import ndimage

    m = np.asarray(mask)
    out = []
    for cls in np.unique(m):
        if cls in (background, ignore):
            continue
        lab, n = ndimage.label(m == cls, structure=_EIGHT)
        for k in range(1, n + 1):
            comp = lab == k
            if comp.sum() >= min_pixels:
                out.append((int(cls), comp))
    return out


def boxes_from_mask(mask: np.ndarray, seed: int, *, jitter: float = 0.0, background: int | None = 0,
                    ignore: int | None = 255, min_pixels: int = 1) -> BoxLabels:
    """One box per connected component of every non-background class (see the module docstring)."""
    if jitter < 0:
        raise DataError(f"jitter must be ≥ 0, found {jitter}")
    m = np.asarray(mask)
    if m.ndim != 2:
        raise DataError(f"boxes_from_mask: the mask must be 2-D, found shape {m.shape}")
    h, w = m.shape
    rng = np.random.default_rng(seed)
    boxes, classes, pixels = [], [], []
    for cls, comp in components(m, background=background, ignore=ignore, min_pixels=min_pixels):
        rows, cols = np.nonzero(comp)
        box = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=np.float64)
        if jitter > 0:
            side = np.array([box[2] - box[0], box[3] - box[1]] * 2)
            box = box + rng.uniform(-1.0, 1.0, 4) * jitter * side
            box = np.clip(box, 0, [w, h, w, h])
            if box[2] - box[0] < 1:
                box[0], box[2] = (min(box[0], w - 1), min(box[0], w - 1) + 1)
            if box[3] - box[1] < 1:
                box[1], box[3] = (min(box[1], h - 1), min(box[1], h - 1) + 1)
        boxes.append(box)
        classes.append(cls)
        pixels.append(int(comp.sum()))
    return BoxLabels(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(classes, dtype=np.int64),
                     np.asarray(pixels, dtype=np.int64))


def thing_mask(mask: np.ndarray, things: dict[int, str], *, ignore_classes: tuple[int, ...] = (),
               ignore: int = 255, other: str = "other") -> tuple[np.ndarray, dict[int, str]]:
    """``(remapped uint8 mask, class names)``: ``things`` (source class id → name, in the output order) become
    ``1..k``, ``ignore_classes`` and ``ignore`` become ``ignore``, every other class ``0`` named ``other``
    (see the module docstring)."""
    m = np.asarray(mask)
    if not things:
        raise DataError("thing_mask: give at least one thing class")
    clash = sorted(set(things) & set(ignore_classes) | ({ignore} & set(things)))
    if clash:
        raise DataError(f"thing_mask: classes {clash} are both things and ignored")
    if len(things) >= min(ignore, 255):
        raise DataError(f"thing_mask: {len(things)} thing classes do not fit below the ignore value {ignore}")
    out = np.zeros(m.shape, dtype=np.uint8)
    for new, cls in enumerate(things, start=1):
        out[m == cls] = new
    out[np.isin(m, list(ignore_classes) + [ignore])] = ignore
    return out, {0: other, **{i: things[c] for i, c in enumerate(things, start=1)}}


def write_boxes_gpkg(path: str | Path, labels: BoxLabels, *, crs: Any, transform: Any,
                     class_names: dict[int, str] | None = None, class_field: str = "class") -> Path:
    """Box polygons (map coordinates through ``transform``) with an integer ``class_field`` (and
    ``class_name`` when names are given) as a GeoPackage layer, written atomically."""
    import geopandas as gpd

    from geolesf.data.supervision import pixel_boxes_to_polygons
    from geolesf.data.weak_labels import write_gpkg

    data: dict[str, Any] = {class_field: labels.classes.astype(np.int32)}
    if class_names:
        data["class_name"] = [class_names.get(int(c), f"class {c}") for c in labels.classes]
    gdf = gpd.GeoDataFrame(data, geometry=pixel_boxes_to_polygons(labels.boxes, transform), crs=crs)
    write_gpkg(gdf, path, engine="pyogrio", geometry_type="Polygon")
    return path


@dataclass
class NoiseReport:
    """What :func:`noisy_from_mask` did (counts per step, and the share of labelled pixels changed)."""

    objects: int = 0
    dropped: int = 0
    wrong_class: int = 0
    eroded: int = 0
    dilated: int = 0
    spurious: int = 0
    changed_share: float = 0.0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _surrounding_class(m: np.ndarray, comp: np.ndarray, ignore: int | None, fallback: int) -> int:
    from scipy import ndimage

    ring = ndimage.binary_dilation(comp, structure=_EIGHT) & ~comp
    values = m[ring]
    values = values[values != ignore] if ignore is not None else values
    if values.size == 0:
        return fallback
    ids, counts = np.unique(values, return_counts=True)
    return int(ids[np.argmax(counts)])


def _move_boundary(out: np.ndarray, comp: np.ndarray, cls: int, k: int, dilate: bool, labelled: np.ndarray) -> None:
    from scipy import ndimage

    square = np.ones((2 * k + 1, 2 * k + 1), dtype=bool)
    if dilate:
        grow = ndimage.binary_dilation(comp, structure=square) & ~comp & labelled
        out[grow] = cls
        return
    inner = ndimage.binary_erosion(comp, structure=square, border_value=1)
    rim = comp & ~inner
    outside = ~comp & labelled
    if not outside.any() or not rim.any():
        return
    _, (iy, ix) = ndimage.distance_transform_edt(~outside, return_indices=True)
    out[rim] = out[iy[rim], ix[rim]]


def noisy_from_mask(mask: np.ndarray, seed: int, *, boundary_px: int = 2, drop_share: float = 0.1,
                    wrong_class_share: float = 0.1, spurious_share: float = 0.1,
                    spurious_radius: tuple[int, int] = (2, 6), background: int | None = 0,
                    ignore: int | None = 255) -> tuple[np.ndarray, NoiseReport]:
    """A noisy copy of ``mask`` by the noise model of the module docstring; ``(noisy mask, report)``."""
    for name, v in (("drop_share", drop_share), ("wrong_class_share", wrong_class_share)):
        if not 0 <= v <= 1:
            raise DataError(f"{name} must be in [0, 1], found {v}")
    if drop_share + wrong_class_share > 1:
        raise DataError(f"drop_share + wrong_class_share must be ≤ 1, found {drop_share + wrong_class_share}")
    if boundary_px < 0 or spurious_share < 0 or not 0 < spurious_radius[0] <= spurious_radius[1]:
        raise DataError("boundary_px and spurious_share must be ≥ 0, spurious_radius 0 < min ≤ max")
    m = np.asarray(mask)
    if m.ndim != 2:
        raise DataError(f"noisy_from_mask: the mask must be 2-D, found shape {m.shape}")
    rng = np.random.default_rng(seed)
    objs = components(m, background=background, ignore=ignore)
    n = len(objs)
    report = NoiseReport(objects=n)
    labelled = m != ignore if ignore is not None else np.ones(m.shape, dtype=bool)
    fg_classes = sorted({c for c, _ in objs})
    fallback = background if background is not None else (fg_classes[0] if fg_classes else 0)
    order = rng.permutation(n)
    n_drop, n_wrong = int(round(drop_share * n)), int(round(wrong_class_share * n))
    drop, wrong, keep = order[:n_drop], order[n_drop:n_drop + n_wrong], order[n_drop + n_wrong:]
    out = m.copy()
    for i in drop:
        cls, comp = objs[i]
        out[comp] = _surrounding_class(m, comp, ignore, fallback)
    report.dropped = len(drop)
    if len(fg_classes) < 2 and len(wrong):
        report.notes.append("wrong class: the mask has one non-background class, no other class to give; "
                            "those objects stay as they are (and get boundary noise)")
        keep, wrong = order[n_drop:], wrong[:0]
    for i in wrong:
        cls, comp = objs[i]
        others = [c for c in fg_classes if c != cls]
        out[comp] = others[int(rng.integers(len(others)))]
        report.wrong_class += 1
    coins = rng.random(len(keep)) < 0.5
    if boundary_px > 0:
        for i, dilate in zip(keep, coins):
            cls, comp = objs[i]
            _move_boundary(out, comp & (out == cls), cls, boundary_px, bool(dilate), labelled)
        report.dilated, report.eroded = int(coins.sum()), int((~coins).sum())
    _paint_blobs(out, rng, int(round(spurious_share * n)), spurious_radius, fg_classes, labelled)
    report.spurious = int(round(spurious_share * n)) if fg_classes else 0
    report.changed_share = float((out != m)[labelled].mean()) if labelled.any() else 0.0
    return out, report


def _paint_blobs(out: np.ndarray, rng: np.random.Generator, count: int, radius: tuple[int, int],
                 classes: list[int], labelled: np.ndarray) -> None:
    if not classes:
        return
    h, w = out.shape
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(count):
        r = rng.uniform(radius[0], radius[1])
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        cls = classes[int(rng.integers(len(classes)))]
        disc = ((yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2 <= r * r) & labelled
        out[disc] = cls


def write_noisy_tif(path: str | Path, noisy: np.ndarray, *, crs: Any, transform: Any,
                    class_names: dict[int, str] | None = None, ignore: int | None = 255,
                    report: NoiseReport | None = None) -> Path:
    """The noisy map as a uint8 class GeoTIFF (nodata = ``ignore``) with its ``.qml``; the report in its tags."""
    from geolesf.colors import default_palette
    from geolesf.io.atomic import atomic_path
    from geolesf.io.qml import raster_qml, write_qml
    from geolesf.io.writers import write_class_map

    path = Path(path)
    values = sorted(int(v) for v in np.unique(noisy) if v != ignore)
    names = {v: (class_names or {}).get(v, f"class {v}") for v in values}
    colors = dict(zip(values, default_palette(len(values))))
    tags = {"GEOLESF_NOISE": report.as_dict()} if report is not None else None
    with atomic_path(path, suffix=".tif", create=False) as tmp:
        write_class_map(tmp, noisy, names, colors, crs=crs, transform=transform, nodata=ignore, tags=tags, qml=False)
    write_qml(path.with_suffix(".qml"), raster_qml(values, [names[v] for v in values], [colors[v] for v in values]))
    return path
