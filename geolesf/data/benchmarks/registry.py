"""Benchmark name → loader, for ``geolesf evaluate --dataset NAME`` and training configs.

=====================  ==============================================================  ==========
name                   loader                                                          classes
=====================  ==============================================================  ==========
``ade20k``             SceneParsing PNGs, or the full 2021 format mapped to ADE-150     150
``ade20k_full``        full 2021 format, raw full-ADE index (``index_mapping`` for 847) any
``voc``/``voc20``      VOC 2012 segmentation without background (open-vocabulary VOC-20) 20
``voc21``/``voc20b``   VOC 2012 segmentation with background                            21
``pascal_context59``   PASCAL-Context 59 (no background)                                59
``pascal_context459``  PASCAL-Context 459                                               459
``coco_stuff``         COCO-Stuff 171                                                   171
=====================  ==============================================================  ==========

Each dataset has ``class_names``, ``ignore_index`` and yields ``dict(image, mask, name)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geolesf.errors import ConfigError

BENCHMARKS = ("ade20k", "ade20k_full", "voc", "voc20", "voc21", "voc20b", "voc2012", "pascal_context59",
              "pascal_context459", "coco_stuff")


def open_benchmark(name: str, root: str | Path, split: str | None = None, **kwargs: Any) -> Any:
    """The dataset ``name`` read from ``root`` (``split`` defaults to the benchmark's validation split)."""
    key = name.lower().replace("-", "_")
    if key in ("ade20k", "ade20k150", "ade150"):
        from geolesf.data.benchmarks.ade20k import open_ade20k

        return open_ade20k(root, split or "validation", **kwargs)
    if key in ("ade20k_full", "ade_full"):
        from geolesf.data.benchmarks.ade20k import ADE20KFull

        return ADE20KFull(root, vocabulary=kwargs.pop("vocabulary", "full"), **kwargs)
    if key in ("voc", "voc20", "voc21", "voc20b", "voc2012"):
        from geolesf.data.benchmarks.voc import VOCSegmentation

        bg = key in ("voc21", "voc20b", "voc2012")
        return VOCSegmentation(root, split or "val", include_background=kwargs.pop("include_background", bg),
                               **kwargs)
    if key in ("pascal_context59", "pc59", "pascal_context459", "pc459", "pascal_context"):
        from geolesf.data.benchmarks.pascal_context import PascalContext

        classes = 459 if "459" in key else 59
        return PascalContext(root, split or "val", classes=classes, **kwargs)
    if key in ("coco_stuff", "coco_stuff171", "cocostuff"):
        from geolesf.data.benchmarks.coco_stuff import COCOStuff

        return COCOStuff(root, split or "val2017", **kwargs)
    raise ConfigError(f"dataset: unknown benchmark '{name}' (known: {', '.join(BENCHMARKS)})")


def prompt_names(dataset: Any) -> list[str]:
    """Class names to turn into CLIP prompts (``prompt_names`` when the dataset has them)."""
    return list(getattr(dataset, "prompt_names", None) or dataset.class_names)
