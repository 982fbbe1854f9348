"""Segment Anything (``segment_anything``) with parameter-efficient fine-tuning for rasters.

- :mod:`~geolesf.methods.sam.build` — SAM from ``segment_anything`` (official vit_b/l/h via
  ``sam_model_registry``, small test widths by the same recipe), official checkpoint I/O with sha256;
- :mod:`~geolesf.methods.sam.stem` — band-adapter stem (1, 3 or any number of bands → SAM's RGB);
- :mod:`~geolesf.methods.sam.model` — :class:`SamSegmenter` (prompted or multi-class semantic head) and
  the registered models ``sam-parser``, ``sam-cobo``, ``sam-lora``, ``sam-adapter``;
- :mod:`~geolesf.methods.sam.checkpoint` — the small PEFT checkpoint (trainable tensors + base sha256)
  and the fold-back to a dense SAM state dict.
"""

from geolesf.methods.sam.build import SAM_SHAPES, build_sam_model, load_sam_state, save_sam_checkpoint
from geolesf.methods.sam.model import SamSegmenter, build_sam_segmenter

__all__ = ["SAM_SHAPES", "SamSegmenter", "build_sam_model", "build_sam_segmenter", "load_sam_state",
           "save_sam_checkpoint"]
