"""Per-pixel spectral baselines: random forest and RBF support-vector machine.

Both are scikit-learn estimators that classify one spectrum (a row of ``(N, Bands)`` features)
at a time; they are registered with task ``"hsi-pixel"`` so the HSI run trains them on the
training pixels' spectra (:mod:`geolesf.methods.hsi.train`).
"""

from __future__ import annotations

from typing import Any

from geolesf.registry import register_model


@register_model("rf", method="hsi", kind="spectrum")
def rf(
    n_estimators: int = 200,
    seed: int = 0,
    n_jobs: int = -1,
    in_chans: int | None = None,
    num_classes: int | None = None,
    **kwargs: Any,
) -> Any:
    """Random forest on raw spectra (200 trees, all cores, seeded)."""
    from sklearn.ensemble import RandomForestClassifier

    del in_chans, num_classes  # the forest adapts to any input width and class count
    return RandomForestClassifier(
        n_estimators=n_estimators, n_jobs=n_jobs, random_state=seed, **kwargs
    )


@register_model("svm", method="hsi", kind="spectrum")
def svm(
    C: float = 100.0,
    gamma: float | str = "scale",
    seed: int = 0,
    in_chans: int | None = None,
    num_classes: int | None = None,
    **kwargs: Any,
) -> Any:
    """RBF support-vector machine on standardised spectra (C=100, gamma='scale')."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    del in_chans, num_classes
    return make_pipeline(
        StandardScaler(), SVC(C=C, gamma=gamma, kernel="rbf", random_state=seed, **kwargs)
    )
