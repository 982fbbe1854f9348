"""CLIP-based models: H-CLIP open-vocabulary segmentation.

- :mod:`geolesf.methods.hclip.backbone` — open_clip CLIP built from its own config, local OpenAI-format
  weights with sha256 check, dense patch features;
- :mod:`geolesf.methods.hclip.prompts` — prompt templates;
- :mod:`geolesf.methods.hclip.cost_aggregation` — the CAT-Seg-style segmentation head;
- :mod:`geolesf.methods.hclip.model` — the ``hclip`` model (registered in the model registry).
"""
