"""``ss.metrics.frozen_feature_probe`` (HEST-style PCA + ridge) against a brute-force computation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr

import sslspatial as ss


def _data(seed=0, n=160, d=40, genes=7):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, d)) * rng.uniform(0.5, 3, size=d) + rng.normal(size=d)
    y = np.tanh(f[:, :5]) @ rng.normal(size=(5, genes)) + 0.5 * rng.normal(size=(n, genes))
    return f[:120], y[:120], f[120:], y[120:]


@pytest.mark.parametrize("n_components", [256, 12])
def test_probe_matches_brute_force_pca_ridge(n_components):
    x_tr, y_tr, x_te, y_te = _data()
    res = ss.metrics.frozen_feature_probe(x_tr, y_tr, x_te, y_te, n_components=n_components, top_genes=[0, 2])
    # brute force: z-score with the training spots, eigenvectors of the training covariance, ridge in closed form
    mean, sd = x_tr.mean(0), x_tr.std(0)
    z_tr, z_te = (x_tr - mean) / sd, (x_te - mean) / sd
    k = min(n_components, x_tr.shape[1])
    centre = z_tr.mean(0)
    eigval, eigvec = np.linalg.eigh(np.cov(z_tr - centre, rowvar=False))
    axes = eigvec[:, np.argsort(-eigval)[:k]]
    p_tr, p_te = (z_tr - centre) @ axes, (z_te - centre) @ axes
    alpha = 100.0 / (k * y_tr.shape[1])
    pm, ym = p_tr.mean(0), y_tr.mean(0)
    w = np.linalg.solve((p_tr - pm).T @ (p_tr - pm) + alpha * np.eye(k), (p_tr - pm).T @ (y_tr - ym))
    pred = (p_te - pm) @ w + ym  # sign of each axis does not matter: it cancels in the fit
    r = np.array([pearsonr(y_te[:, g], pred[:, g])[0] for g in range(y_te.shape[1])])
    assert res["n_components"] == k and res["alpha"] == pytest.approx(alpha)
    np.testing.assert_allclose(res["prediction"], pred, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(res["pearson"], r, atol=1e-5)
    assert res["mean_pcc"] == pytest.approx(r.mean(), abs=1e-6)
    assert res["mean_pcc_top"] == pytest.approx(r[[0, 2]].mean(), abs=1e-6)


def test_probe_uses_no_test_targets_and_checks_shapes():
    x_tr, y_tr, x_te, y_te = _data()
    a = ss.metrics.frozen_feature_probe(x_tr, y_tr, x_te, y_te)["prediction"]
    b = ss.metrics.frozen_feature_probe(x_tr, y_tr, x_te, np.random.default_rng(1).normal(size=y_te.shape))
    np.testing.assert_array_equal(a, b["prediction"])
    with pytest.raises(ValueError, match="same columns"):
        ss.metrics.frozen_feature_probe(x_tr, y_tr, x_te[:, :3], y_te)
    with pytest.raises(ValueError, match="disagree"):
        ss.metrics.frozen_feature_probe(x_tr, y_tr[:10], x_te, y_te)
