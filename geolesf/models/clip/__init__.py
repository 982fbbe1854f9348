"""CLIP-based models: H-CLIP open-vocabulary segmentation.

- :mod:`geolesf.models.clip.backbone` — open_clip CLIP built from its own config, local OpenAI-format
  weights with sha256 check, dense patch features;
- :mod:`geolesf.models.clip.prompts` — prompt templates;
- :mod:`geolesf.models.clip.cost_aggregation` — the CAT-Seg-style segmentation head;
- :mod:`geolesf.models.clip.hclip` — the ``hclip`` model (registered in the model registry).
"""
