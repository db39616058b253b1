"""Training-free yardsticks stored next to the scores ``tl`` functions report, so a score can be read against them."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#: Ridge penalties searched (efficient leave-one-out, one penalty for all genes), as in
#: ``benchmarks/hist2expr_her2st.py``'s ``ridge_stats`` row.
RIDGE_ALPHAS = np.logspace(-1, 4, 12)
RIDGE_BASELINE = "ridge on image statistics"


def ridge_on_image_statistics(
    train_features: np.ndarray, train_targets: np.ndarray, features: Mapping[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], float]:
    """Predictions of a ridge regression from image statistics to expression, fitted on the training spots.

    Features are z-scored with the training spots' mean and SD (``StandardScaler``), then ``RidgeCV`` picks one
    penalty from :data:`RIDGE_ALPHAS` by leave-one-out on the training spots.

    Parameters
    ----------
    train_features
        ``(n_train, d)`` image statistics of the training spots (``ss.pp.image_features(method="stats")``).
    train_targets
        ``(n_train, n_genes)`` targets of the training spots.
    features
        Name -> ``(n, d)`` image statistics of the spots to predict.

    Returns
    -------
    Name -> ``(n, n_genes)`` float32 predictions, and the chosen penalty.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> f = rng.normal(size=(50, 3))
    >>> y = f @ rng.normal(size=(3, 2))
    >>> pred, alpha = ridge_on_image_statistics(f, y, {"a": f[:5]})
    >>> pred["a"].shape, float(alpha)
    ((5, 2), 0.1)
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_features)
    ridge = RidgeCV(alphas=RIDGE_ALPHAS).fit(scaler.transform(train_features), train_targets)
    out = {k: ridge.predict(scaler.transform(v)).astype(np.float32).reshape(len(v), -1) for k, v in features.items()}
    return out, float(ridge.alpha_)
