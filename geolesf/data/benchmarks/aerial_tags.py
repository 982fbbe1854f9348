"""Image-level tags for aerial tiles, derived from dense land-cover masks (LoveDA, Potsdam, Vaihingen).

The image/label pairs (``img/NAME.png`` + ``ann/NAME.png``, the mmsegmentation layout of the
samples in ``rs_seg_tiles``) are optionally downsampled (``downsample`` = integer factor: area
average for the image, the top-left pixel of each block for the labels), cut into
non-overlapping ``tile × tile`` crops and tagged: class ``k`` is in a crop's tags when it covers at
least ``min_fraction`` of the crop's valid pixels (:func:`geolesf.data.supervision.tags_from_mask`).
A CSV / GeoPackage of tile tags (``tags_file``, tiles named ``NAME_ROW_COL`` by their pixel offsets)
replaces the derived tags. Masks are remapped to contiguous indices ``0..C-1`` (255 = ignore); there
is no separate background class — every pixel belongs to a land-cover class.

Class ids are those of mmsegmentation's converted tiles. LoveDA: 0 no data, 1..7 as named below.
ISPRS Potsdam / Vaihingen (``tools/dataset_converters/potsdam.py`` / ``vaihingen.py`` on the eroded ground
truth, read by mmsegmentation with ``reduce_zero_label=True``): 0 is the black boundary band between regions
of the eroded labels (no data; a band about 8 px wide in the ``rs_seg_tiles`` crops, checked against their
images), 1 impervious surfaces, 2 building, 3 low vegetation, 4 tree, 5 car, 6 clutter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from geolesf.data.benchmarks.base import SampleList
from geolesf.data.supervision import read_tile_tags, tags_from_mask
from geolesf.errors import DataError

IGNORE_INDEX = 255

#: source → (class ids in the masks, class names, ids that mean no-data)
SOURCES: dict[str, tuple[tuple[int, ...], tuple[str, ...], tuple[int, ...]]] = {
    "loveda": ((1, 2, 3, 4, 5, 6, 7),
               ("background", "building", "road", "water", "barren", "forest", "agriculture"), (0,)),
    "potsdam": ((1, 2, 3, 4, 5, 6),
                ("impervious surfaces", "building", "low vegetation", "tree", "car", "clutter"), (0,)),
    "vaihingen": ((1, 2, 3, 4, 5, 6),
                  ("impervious surfaces", "building", "low vegetation", "tree", "car", "clutter"), (0,)),
}


def _find_folder(root: Path, source: str) -> Path:
    for cand in (root, root / source, root / "rs_seg_tiles" / source):
        if (cand / "img").is_dir() and (cand / "ann").is_dir():
            return cand
    raise DataError(f"{root}: no {source} tiles found (expected img/ and ann/ under {root}, {root / source} "
                    f"or {root / 'rs_seg_tiles' / source})")


class AerialTagTiles(SampleList):
    """Tagged crops ``dict(image uint8 (t, t, 3), mask int64 (t, t), labels (C,), name)``."""

    ignore_index = IGNORE_INDEX

    def __init__(self, root: str | Path, source: str = "loveda", *, tile: int = 128, downsample: int = 1,
                 min_fraction: float = 0.01, tags_file: str | Path | None = None,
                 names: list[str] | None = None) -> None:
        from PIL import Image

        if source not in SOURCES:
            raise DataError(f"aerial source must be one of {', '.join(SOURCES)}, found '{source}'")
        if tile < 8 or downsample < 1:
            raise DataError(f"aerial tiles: tile must be ≥ 8 and downsample ≥ 1, found {tile} and {downsample}")
        self.source = source
        self.class_ids, self.class_names, nodata = SOURCES[source]
        folder = _find_folder(Path(root), source)
        lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
        for k, cid in enumerate(self.class_ids):
            lut[cid] = k
        self.samples: list[dict[str, Any]] = []
        anns = sorted((folder / "ann").glob("*.png"))
        if names is not None:
            anns = [a for a in anns if a.stem in set(names)]
        if not anns:
            raise DataError(f"{folder / 'ann'}: no label PNGs")
        for ann in anns:
            img_path = folder / "img" / ann.name
            if not img_path.is_file():
                raise DataError(f"{ann}: no image {img_path} beside it")
            with Image.open(img_path) as im:
                image = np.array(im.convert("RGB"))
            with Image.open(ann) as am:
                raw = np.array(am)
            if raw.ndim != 2 or raw.shape != image.shape[:2]:
                raise DataError(f"{ann}: expected a single-band label image of {image.shape[:2]}, found {raw.shape}")
            bad = ~np.isin(raw, list(self.class_ids) + list(nodata))
            if bad.any():
                raise DataError(f"{ann}: label {int(raw[bad][0])} is not a {source} class id ({self.class_ids})")
            mask = lut[raw]
            if downsample > 1:
                h, w = (s // downsample * downsample for s in raw.shape)
                image = image[:h, :w].reshape(h // downsample, downsample, w // downsample, downsample, 3)
                image = image.mean((1, 3)).round().astype(np.uint8)
                mask = mask[:h:downsample, :w:downsample]
            for r in range(0, mask.shape[0] - tile + 1, tile):
                for c in range(0, mask.shape[1] - tile + 1, tile):
                    m = mask[r:r + tile, c:c + tile]
                    if (m == IGNORE_INDEX).all():
                        continue
                    self.samples.append({
                        "image": np.ascontiguousarray(image[r:r + tile, c:c + tile]), "mask": m.copy(),
                        "labels": tags_from_mask(m, range(len(self.class_ids)), min_fraction=min_fraction),
                        "name": f"{ann.stem}_{r * downsample}_{c * downsample}",
                    })
        if tags_file is not None:
            given = read_tile_tags(tags_file, self.class_names).as_dict()
            missing = [s["name"] for s in self.samples if s["name"] not in given]
            if missing:
                raise DataError(f"{tags_file}: no tags for tile '{missing[0]}' ({len(missing)} tiles missing)")
            for s in self.samples:
                s["labels"] = given[s["name"]].astype(np.float32)

    @property
    def items(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.samples

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.samples[index]
