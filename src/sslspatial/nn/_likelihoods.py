"""The likelihood factory of every module: a name and its parameters -> a :mod:`scvi.distributions` object."""

from __future__ import annotations

import torch
from scvi.distributions import NegativeBinomial, Normal, Poisson, ZeroInflatedNegativeBinomial

from .._validate import check_choice

__all__ = ["COUNT_LIKELIHOODS", "LIKELIHOODS", "check_likelihood", "likelihood_distribution"]

COUNT_LIKELIHOODS = ("nb", "zinb", "poisson")
LIKELIHOODS = (*COUNT_LIKELIHOODS, "gaussian")


def check_likelihood(likelihood: str, extra: tuple[str, ...] = ()) -> str:
    """Raise a ``ValueError`` unless ``likelihood`` is one of :data:`LIKELIHOODS` (or of ``extra``).

    Examples
    --------
    >>> check_likelihood("zinb")
    'zinb'
    >>> check_likelihood("none", extra=("none",))
    'none'
    """
    return check_choice(likelihood, (*LIKELIHOODS, *extra), "likelihood")


def likelihood_distribution(
    likelihood: str,
    mean: torch.Tensor,
    *,
    theta: torch.Tensor | None = None,
    zi_logits: torch.Tensor | None = None,
    sigma: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
) -> torch.distributions.Distribution:
    """The distribution named ``likelihood`` with mean ``mean``.

    Parameters
    ----------
    likelihood
        ``"nb"``, ``"zinb"``, ``"poisson"`` or ``"gaussian"``.
    mean
        Mean (``mu``/``rate`` of the count models, ``loc`` of the Gaussian).
    theta
        Inverse dispersion (``nb``, ``zinb``).
    zi_logits
        Zero-inflation logits (``zinb``).
    sigma
        Standard deviation (``gaussian``).
    scale
        Optional normalised mean (proportions) the count distributions carry along (scvi's ``scale``).

    Examples
    --------
    >>> d = likelihood_distribution("nb", torch.ones(2, 3), theta=torch.ones(3))
    >>> type(d).__name__, tuple(d.log_prob(torch.zeros(2, 3)).shape)
    ('NegativeBinomial', (2, 3))
    """
    if likelihood == "gaussian":
        return Normal(mean, sigma)
    if likelihood == "poisson":
        return Poisson(mean, scale=scale)
    if likelihood == "nb":
        return NegativeBinomial(mu=mean, theta=theta, scale=scale)
    if likelihood == "zinb":
        return ZeroInflatedNegativeBinomial(mu=mean, theta=theta, zi_logits=zi_logits, scale=scale)
    check_likelihood(likelihood)
    raise AssertionError  # pragma: no cover (check_likelihood raised)
