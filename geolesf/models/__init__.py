"""Model constructors, registered by name in :mod:`geolesf.registry` (one method per module).

- :mod:`geolesf.models.baselines` — ``rf`` and ``svm`` per-pixel spectral baselines (scikit-learn).
"""
