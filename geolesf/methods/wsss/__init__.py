"""Weakly supervised semantic segmentation (WSSS).

From cheap labels (image-level tags, points, scribbles, boxes) to dense pseudo-labels and a segmenter:

- :mod:`geolesf.methods.wsss.cam` — class activation maps (ResNet / ViT), multi-scale + flip inference;
- :mod:`geolesf.methods.wsss.usage` — USAGE seed-area generation (temperature pooling, equivariance loss);
- :mod:`geolesf.losses.affinity` (shared, layer 3) — affinity from attention or embeddings, adaptive affinity loss;
- :mod:`geolesf.losses.reassign` (shared, layer 3) — the label-reassign loss;
- :mod:`geolesf.methods.wsss.single_stage` — the joint classification + segmentation network;
- :mod:`geolesf.data.supervision` — the supervision types and their converters.
"""
