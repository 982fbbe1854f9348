"""Run orchestration: from a config to a run folder.

- :mod:`geolesf.tasks.hsi_run` — per-pixel hyperspectral classification runs (read, split,
  normalise, train through a pluggable trainer, evaluate, write maps and metrics).
"""
