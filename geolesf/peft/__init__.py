"""Parameter-efficient fine-tuning: one method per module.

- :mod:`geolesf.peft.svd_coeff` — SAM-PARSER (train the singular values of SAM's weights);
- :mod:`geolesf.peft.cross_block` — cross-block orchestration (shared relation matrix, quaternion
  projector) on Adapter and LoRA hosts;
- :mod:`geolesf.peft.orthogonal` — H-CLIP's block-diagonal orthogonal (Cayley) reparameterisation.
"""
