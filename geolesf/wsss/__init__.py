"""Weakly supervised semantic segmentation (WSSS).

From cheap labels (image-level tags, points, scribbles, boxes) to dense pseudo-labels and a segmenter:

- :mod:`geolesf.models.cam` — class activation maps (ResNet / ViT), multi-scale + flip inference;
- :mod:`geolesf.wsss.usage` — USAGE seed-area generation (temperature pooling, equivariance loss);
- :mod:`geolesf.wsss.affinity` — affinity from attention or embeddings, adaptive affinity loss;
- :mod:`geolesf.wsss.reassign` — the label-reassign loss;
- :mod:`geolesf.wsss.single_stage` — the joint classification + segmentation network;
- :mod:`geolesf.wsss.supervision` — the supervision types and their converters.
"""
