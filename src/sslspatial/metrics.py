"""Evaluation metrics shared by benchmarks, tests and the ``tl`` functions, and the super-resolution baselines."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def pearson_per_gene(truth, prediction) -> np.ndarray:
    """Pearson correlation between truth and prediction for each column (gene).

    Columns where either side is constant get ``NaN``; average with :func:`numpy.nanmean`.

    Parameters
    ----------
    truth
        Measured values, dense or sparse, of shape ``(n_obs, n_genes)``.
    prediction
        Predicted values of the same shape.

    Returns
    -------
    Array of shape ``(n_genes,)``.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    >>> pearson_per_gene(t, 2 * t + 1)
    array([ 1., nan])
    """
    t, p = _dense(truth), _dense(prediction)
    if t.shape != p.shape:
        raise ValueError(f"truth {t.shape} and prediction {p.shape} must have the same shape.")
    t = t - t.mean(0)
    p = p - p.mean(0)
    denom = np.sqrt((t**2).sum(0) * (p**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (t * p).sum(0) / denom
    r[denom <= 1e-12 * max(1.0, float(denom.max(initial=0.0)))] = np.nan
    return r


def rmse_per_gene(truth, prediction) -> np.ndarray:
    """Root mean squared error per column (gene).

    Examples
    --------
    >>> rmse_per_gene(np.zeros((2, 1)), np.array([[3.0], [4.0]])).round(3)
    array([3.536])
    """
    t, p = _dense(truth), _dense(prediction)
    return np.sqrt(((t - p) ** 2).mean(0))


def frozen_feature_probe(
    train_features,
    train_targets,
    test_features,
    test_targets,
    *,
    n_components: int = 256,
    alpha: float | None = None,
    top_genes=None,
) -> dict:
    """HEST-style linear probe of frozen image features: PCA + ridge fitted on training spots, scored on held-out ones.

    The features are z-scored with the training spots' mean and SD, reduced to ``min(n_components, n_features,
    n_train)`` principal components of the training spots (``sklearn.decomposition.PCA``, no whitening), and a ridge
    regression (``sklearn.linear_model.Ridge``, with intercept) maps them to the targets. Nothing of the test spots
    enters the fit. The score is the per-gene Pearson correlation on the test spots (:func:`pearson_per_gene`).
    This is the protocol of HEST-Benchmark (PCA to 256 components + ridge on frozen features), so a feature extractor
    (image statistics, a self-supervised encoder, a foundation model) can be compared with a trained model on the
    same folds.

    Parameters
    ----------
    train_features
        ``(n_train, d)`` frozen features of the training spots.
    test_features
        ``(n_test, d)`` frozen features of the held-out spots.
    train_targets
        ``(n_train, n_genes)`` targets of the training spots (e.g. ``log1p(x / total * 1e4)``).
    test_targets
        ``(n_test, n_genes)`` targets of the held-out spots, scored against the predictions.
    n_components
        Principal components kept (at most the number of features and of training spots).
    alpha
        Ridge penalty; None: ``100 / (n_components * n_genes)``, a small fixed penalty (our reading of
        HEST-Benchmark's probe; with a few hundred components and thousands of spots the fit is close to least
        squares).
    top_genes
        Optional column indices (e.g. the 50 most variable genes) also summarised on their own.

    Returns
    -------
    ``{"pearson": (n_genes,) per-gene Pearson, "mean_pcc", "median_pcc", "n_components", "alpha", "prediction":
    (n_test, n_genes)}``, plus ``"mean_pcc_top"`` and ``"median_pcc_top"`` with ``top_genes``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> f = rng.normal(size=(200, 5))
    >>> y = f @ rng.normal(size=(5, 3)) + 0.1 * rng.normal(size=(200, 3))
    >>> res = frozen_feature_probe(f[:150], y[:150], f[150:], y[150:])
    >>> res["n_components"], bool(res["mean_pcc"] > 0.9)
    (5, True)
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    x_train, x_test = _dense(train_features), _dense(test_features)
    y_train, y_test = _dense(train_targets), _dense(test_targets)
    if x_train.ndim != 2 or x_test.ndim != 2 or x_train.shape[1] != x_test.shape[1]:
        raise ValueError(
            f"train_features {x_train.shape} and test_features {x_test.shape} must be 2-D with the same columns."
        )
    if len(x_train) != len(y_train) or len(x_test) != len(y_test) or y_train.shape[1:] != y_test.shape[1:]:
        raise ValueError(
            f"features and targets disagree: train {x_train.shape} / {y_train.shape}, test {x_test.shape} / "
            f"{y_test.shape} (one row per spot, the same genes in both)."
        )
    if n_components < 1:
        raise ValueError(f"n_components={n_components} must be a positive number of principal components.")
    k = int(min(n_components, x_train.shape[1], x_train.shape[0]))
    scaler = StandardScaler().fit(x_train)
    pca = PCA(n_components=k, svd_solver="full").fit(scaler.transform(x_train))
    alpha = 100.0 / (k * y_train.shape[1]) if alpha is None else float(alpha)
    ridge = Ridge(alpha=alpha).fit(pca.transform(scaler.transform(x_train)), y_train)
    prediction = ridge.predict(pca.transform(scaler.transform(x_test))).reshape(len(x_test), -1)
    r = pearson_per_gene(y_test, prediction)
    out = {"pearson": r, "mean_pcc": float(np.nanmean(r)), "median_pcc": float(np.nanmedian(r)),
           "n_components": k, "alpha": alpha, "prediction": prediction.astype(np.float32)}  # fmt: skip
    if top_genes is not None:
        top = np.asarray(top_genes)
        out |= {"mean_pcc_top": float(np.nanmean(r[top])), "median_pcc_top": float(np.nanmedian(r[top]))}
    return out


def ssim(image_a: np.ndarray, image_b: np.ndarray, data_range: float | None = None, window: int = 3) -> float:
    """Structural similarity of two 2-D maps (e.g. a gene's sub-spot map), with a uniform ``window`` x ``window`` filter.

    NaN pixels (outside the tissue) are filled with the mean of the valid pixels of each map.

    Examples
    --------
    >>> a = np.random.default_rng(0).random((8, 8))
    >>> round(ssim(a, a), 6)
    1.0
    """
    from scipy.ndimage import uniform_filter

    a, b = (np.asarray(x, dtype=np.float64).copy() for x in (image_a, image_b))
    for arr in (a, b):
        arr[~np.isfinite(arr)] = np.nanmean(arr) if np.isfinite(arr).any() else 0.0
    if data_range is None:
        data_range = max(a.max() - a.min(), b.max() - b.min(), 1e-12)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = uniform_filter(a, window), uniform_filter(b, window)
    var_a = uniform_filter(a * a, window) - mu_a**2
    var_b = uniform_filter(b * b, window) - mu_b**2
    cov = uniform_filter(a * b, window) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


def classification_report(y_true, y_pred, probabilities=None, classes=None) -> dict[str, float]:
    """Macro-F1, balanced accuracy, accuracy, Cohen's kappa and (with probabilities) one-vs-rest AUROC / AUPRC.

    Classes absent from ``y_true`` are left out of AUROC / AUPRC rather than raising.

    Parameters
    ----------
    y_true
        True labels.
    y_pred
        Predicted labels.
    probabilities
        Optional ``(n, n_classes)`` class probabilities, columns in the order of ``classes``.
    classes
        Class names of the probability columns.

    Returns
    -------
    Dictionary of metric name to value.

    Examples
    --------
    >>> classification_report(["a", "b", "a"], ["a", "b", "b"])["accuracy"]
    0.6666666666666666
    """
    from sklearn import metrics as skm

    y_true, y_pred = np.asarray(y_true).astype(str), np.asarray(y_pred).astype(str)
    out = {
        "macro_f1": float(skm.f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "cohen_kappa": float(skm.cohen_kappa_score(y_true, y_pred)),
    }
    if probabilities is not None and classes is not None:
        probabilities = np.asarray(probabilities)
        classes = np.asarray(classes).astype(str)
        present = [i for i, c in enumerate(classes) if (y_true == c).any() and (y_true != c).any()]
        if present:
            onehot = np.stack([(y_true == classes[i]) for i in present], 1).astype(int)
            out["auroc"] = float(skm.roc_auc_score(onehot, probabilities[:, present], average="macro"))
            out["auprc"] = float(skm.average_precision_score(onehot, probabilities[:, present], average="macro"))
    return out


def clustering_report(labels_true, labels_pred) -> dict[str, float]:
    """Adjusted Rand index and normalised mutual information.

    Examples
    --------
    >>> clustering_report([0, 0, 1, 1], [1, 1, 0, 0])["ari"]
    1.0
    """
    from sklearn import metrics as skm

    return {
        "ari": float(skm.adjusted_rand_score(labels_true, labels_pred)),
        "nmi": float(skm.normalized_mutual_info_score(labels_true, labels_pred)),
    }


def uniform_split(spot_x: np.ndarray, n_subspots: int) -> np.ndarray:
    """Super-resolution baseline: every sub-spot gets ``spot / K``; ``(n * K, G)`` ordered spot by spot.

    Examples
    --------
    >>> uniform_split(np.array([[4.0, 8.0]]), 4)[:, 1].tolist()
    [2.0, 2.0, 2.0, 2.0]
    """
    return np.repeat(np.asarray(spot_x, dtype=np.float64) / n_subspots, n_subspots, axis=0)


def kernel_interpolation(
    spot_x: np.ndarray, centres: np.ndarray, subspot_centres: np.ndarray, bandwidth: float, n_neighbours: int = 19
) -> np.ndarray:
    """Super-resolution baseline: ``spot / K`` interpolated by a Gaussian kernel over spot centres, at each sub-spot.

    ``x_nk = sum_m w_m x_m / K / sum_m w_m``, ``w_m = exp(-|p_nk - centre_m|^2 / (2 h^2))`` over the
    ``n_neighbours`` nearest spot centres (the spot itself included). Returns ``(n * K, G)`` ordered spot by spot.

    Examples
    --------
    >>> x = np.array([[0.0], [4.0]])
    >>> kernel_interpolation(x, np.array([[0.0, 0], [10, 0]]), np.array([[[5.0, 0]], [[10.0, 0]]]), 1.0).ravel()
    array([2., 4.])
    """
    from scipy.spatial import cKDTree

    n, k, _ = subspot_centres.shape
    pts = subspot_centres.reshape(-1, 2)
    m = min(n_neighbours, len(centres))
    dist, idx = cKDTree(centres).query(pts, k=m)
    dist, idx = dist.reshape(len(pts), m), idx.reshape(len(pts), m)
    logw = -(dist**2) / (2 * bandwidth**2)
    w = np.exp(logw - logw.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    return np.einsum("pm,pmg->pg", w, np.asarray(spot_x, dtype=np.float64)[idx]) / k
