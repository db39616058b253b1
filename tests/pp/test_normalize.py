"""ss.pp.pearson_residuals against a hand computation."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

import sslspatial as ss


def test_pearson_residuals_match_the_nb_formula_with_clipping_and_empty_genes():
    counts = np.array([[4.0, 0.0, 0.0], [0.0, 2.0, 0.0], [6.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    got = ss.pp.pearson_residuals(sp.csr_matrix(counts), theta=2.0, clip=1.5)
    # library (4, 2, 8, 0), gene totals (10, 4, 0), total 14: mu[i, g] = library[i] * total[g] / 14
    mu = np.outer([4, 2, 8, 0], [10, 4, 0]) / 14
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = (counts - mu) / np.sqrt(mu + mu**2 / 2.0)
    expected = np.clip(np.nan_to_num(expected), -1.5, 1.5)  # the empty gene and the empty cell give 0
    np.testing.assert_allclose(got, expected)
    assert np.isclose(got[0, 0], (4 - 40 / 14) / np.sqrt(40 / 14 + (40 / 14) ** 2 / 2))  # by hand, unclipped
    assert np.all(got[:, 2] == 0) and np.all(got[3] == 0)
    # default clip: sqrt(n_obs) = 2
    assert ss.pp.pearson_residuals(counts, theta=2.0).max() <= 2.0


def test_pearson_residuals_with_given_gene_fractions_use_them_and_each_cells_own_library():
    counts = np.array([[4.0, 0.0, 2.0], [1.0, 3.0, 0.0]])
    own = counts.sum(0) / counts.sum()
    np.testing.assert_allclose(ss.pp.pearson_residuals(counts, gene_fraction=own), ss.pp.pearson_residuals(counts))
    fraction = np.array([0.5, 0.25, 0.25])  # e.g. a reference's
    got = ss.pp.pearson_residuals(counts, theta=10.0, clip=100.0, gene_fraction=fraction)
    mu = np.outer([6.0, 4.0], fraction)
    np.testing.assert_allclose(got, (counts - mu) / np.sqrt(mu + mu**2 / 10.0))
