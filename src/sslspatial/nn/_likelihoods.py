"""The likelihood factory of every module: a name and its parameters -> a :mod:`scvi.distributions` object."""

from __future__ import annotations

from typing import Literal, get_args

import torch
from scvi.distributions import NegativeBinomial, Normal, Poisson, ZeroInflatedNegativeBinomial

from .._validate import check_choice

__all__ = [
    "COUNT_LIKELIHOODS", "LIKELIHOODS", "LIKELIHOOD_PARAMETERS", "CountLikelihood", "GeneDispersionNB", "Likelihood",
    "check_likelihood", "is_count", "likelihood_distribution", "takes",
]  # fmt: skip

#: The likelihoods of raw counts, and every likelihood: the one definition the annotations and checks derive from.
CountLikelihood = Literal["nb", "zinb", "poisson"]
Likelihood = Literal[CountLikelihood, "gaussian"]
COUNT_LIKELIHOODS = get_args(CountLikelihood)
LIKELIHOODS = (*COUNT_LIKELIHOODS, "gaussian")
#: What each likelihood takes beyond its mean (the arguments :func:`likelihood_distribution` reads): modules ask
#: :func:`takes` instead of comparing names, so a new likelihood is added here and in the dispatcher only.
LIKELIHOOD_PARAMETERS = {"nb": ("theta",), "zinb": ("theta", "zi_logits"), "poisson": (), "gaussian": ("sigma",)}


def is_count(likelihood: str) -> bool:
    """Whether ``likelihood`` models raw counts (its data are non-negative integers, its inputs ``log1p``-ed).

    Examples
    --------
    >>> is_count("zinb"), is_count("gaussian")
    (True, False)
    """
    return likelihood in COUNT_LIKELIHOODS


def takes(likelihood: str, parameter: str) -> bool:
    """Whether ``likelihood`` has the parameter ``parameter`` (``"theta"``, ``"zi_logits"``, ``"sigma"``).

    Examples
    --------
    >>> takes("nb", "theta"), takes("nb", "zi_logits"), takes("gaussian", "sigma")
    (True, False, True)
    """
    return parameter in LIKELIHOOD_PARAMETERS.get(likelihood, ())


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


class GeneDispersionNB(NegativeBinomial):
    """scvi's :class:`~scvi.distributions.NegativeBinomial` with one inverse dispersion per gene, scored cheaply.

    ``log_prob`` equals scvi's ``log_nb_positive`` term by term, but the terms that depend on ``theta`` alone
    (``theta * log(theta)`` and ``lgamma(theta)``) are computed once per gene instead of once per entry; ``lgamma`` and
    its backward (``digamma``) are among the costliest operations of a pretraining step.

    Parameters
    ----------
    mu
        ``(..., n_genes)`` means.
    theta
        ``(n_genes,)`` inverse dispersions.
    scale
        Optional normalised mean carried along, as in scvi.

    Examples
    --------
    >>> mu, theta, x = torch.rand(4, 3) + 0.1, torch.rand(3) + 0.5, torch.poisson(torch.ones(4, 3))
    >>> full = NegativeBinomial(mu=mu, theta=theta.expand_as(mu)).log_prob(x)
    >>> bool(torch.allclose(GeneDispersionNB(mu, theta).log_prob(x), full, atol=1e-5))
    True
    """

    def __init__(self, mu: torch.Tensor, theta: torch.Tensor, scale: torch.Tensor | None = None):
        if theta.dim() != 1 or theta.shape[0] != mu.shape[-1]:
            raise ValueError(
                f"GeneDispersionNB needs one theta per gene: shape ({mu.shape[-1]},), got {tuple(theta.shape)}; "
                "use scvi.distributions.NegativeBinomial for a theta per entry."
            )
        super().__init__(mu=mu, theta=theta, scale=scale)
        self.theta_per_gene = theta

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log-probability of ``value`` (same shape as ``mu``)."""
        if self.on_mps or self._validate_args:  # scvi's own path (MPS lgamma fix, support checks)
            return super().log_prob(value)
        theta, eps = self.theta_per_gene, self._eps
        per_gene = theta * torch.log(theta + eps) - torch.lgamma(theta)
        log_theta_mu = torch.log(theta + self.mu + eps)
        return (
            per_gene
            - (theta + value) * log_theta_mu
            + value * torch.log(self.mu + eps)
            + torch.lgamma(value + theta)
            - torch.lgamma(value + 1)
        )


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
        Inverse dispersion (``nb``, ``zinb``). For ``nb``, a 1-d ``theta`` of one value per gene (the last axis of
        ``mean``) gives a :class:`GeneDispersionNB`, whose ``log_prob`` is cheaper.
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
    ('GeneDispersionNB', (2, 3))
    """
    if likelihood == "gaussian":
        return Normal(mean, sigma)
    if likelihood == "poisson":
        return Poisson(mean, scale=scale)
    if likelihood == "nb":
        if theta is not None and theta.dim() == 1 and theta.shape[0] == mean.shape[-1]:
            return GeneDispersionNB(mean, theta, scale=scale)
        return NegativeBinomial(mu=mean, theta=theta, scale=scale)
    if likelihood == "zinb":
        return ZeroInflatedNegativeBinomial(mu=mean, theta=theta, zi_logits=zi_logits, scale=scale)
    check_likelihood(likelihood)
    raise AssertionError  # pragma: no cover (check_likelihood raised)
