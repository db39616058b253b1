"""Super-resolution module (soScope re-implementation with proper likelihoods and an exact sum constraint).

Generative model, per spot ``n`` with K sub-spots and features split into modalities (e.g. RNA, protein):

- Spot posterior ``q(z_n | spot graph)`` from a graph transformer over the spot's k-hop subgraph; ``p(z) = N(0, I)``.
- Spot fitted mean ``mu_n`` from ``z_n``: ``l_n * softmax(f(z_n))`` per count modality (``l_n`` the observed
  modality total), ``f(z_n)`` for a Gaussian modality; ``x_n ~ P(mu_n)``.
- Sub-spot branch: a ResNet-MLP maps each sub-spot's features ``y_nk`` (image features, directional graph context)
  to a sub-spot mean ``g_nk`` (count: ``l_n * softmax_{k,g}(f(y_nk)_g)``, one softmax over the spot's sub-spots and
  features jointly; Gaussian: ``f(y_nk)``). The observed spot has the proper likelihood
  ``x_n ~ P(sum_k g_nk)`` (NB / ZINB / Poisson / Gaussian, *not* soScope's MSE), so the branch learns, across spots,
  how sub-spot features translate into expression (a deconvolution). The branch does not see ``z_n``: a decoder that
  sees the spot's own profile can explain the sum with a uniform split and learns nothing about sub-spots.
- ``count_aware=True``: the branch predicts absolute sub-spot rates ``g_nk = exp(f(y_nk) + b)`` instead of shares of
  the observed total, so the spot's *total* count is explained too and the branch can learn which sub-spots carry
  more transcripts (e.g. from the image's nuclear-stain density), not only what they express.
- Enhanced profiles: ``m_nk = mu_n * pi_nk`` with ``pi_nk = g_nk / sum_k g_nk`` (count) or
  ``m_nk = mu_n / K + g_nk - mean_k g_nk`` (Gaussian), so ``sum_k m_nk = mu_n`` exactly.
- Uniform prior (``uniform_weight``): the spot likelihood only sees the sum over sub-spots, so where the sub-spot
  features carry no evidence the within-spot allocation is arbitrary; a penalty on the within-spot variance of the
  sub-spot log-means (over K, summed over features like the log-likelihood) shrinks it toward the uniform split
  unless the data across spots support a deviation.
- Image regulariser: on randomly sampled sub-spot pairs (never the dense (NK)^2 matrix), pairs whose image features
  are similar get similar sub-spot compositions (weight ``exp(-d^2 / 2 median(d^2))``).
"""

from __future__ import annotations

import torch
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn
from torch.distributions import Normal as TorchNormal
from torch.distributions import kl_divergence

from .._constants import REGISTRY_KEYS as KEYS
from ..nn._likelihoods import LIKELIHOODS, check_likelihood, is_count, likelihood_distribution, takes
from ..nn._superres import SpotGraphEncoder, SubspotDecoder

__all__ = ["LIKELIHOODS", "SuperResModule"]

_EPS = 1e-8


def _within_spot_variance(v: torch.Tensor) -> torch.Tensor:
    """Population variance over the sub-spot axis of ``(B, K, G)``, giving ``(B, G)``.

    Written out because ``Tensor.var`` over a middle axis is several times slower on CPU.
    """
    return (v - v.mean(1, keepdim=True)).square().mean(1)


class SuperResModule(BaseModuleClass):
    """Spot encoder, spot decoder and sub-spot decoder with per-modality likelihoods.

    Parameters
    ----------
    modality_sizes
        Number of features of each modality; the columns of ``X`` are the modalities one after the other.
    likelihoods
        One of ``"nb"``, ``"zinb"``, ``"poisson"``, ``"gaussian"`` per modality.
    n_subspots
        K, sub-spots per spot.
    n_subspot_features
        Feature width per sub-spot (image + context; 0 for none).
    n_image_features
        How many of those (the first ones) are image features, used by the image regulariser.
    n_hidden, n_latent, n_layers
        Encoder widths and number of graph-transformer layers.
    n_reduce
        Width of the encoder's linear gene-reduction layer (see :class:`~sslspatial.nn._superres.SpotGraphEncoder`);
        ``None``: none.
    n_hidden_decoder, n_blocks
        Sub-spot decoder width and residual blocks.
    image_weight
        Weight of the image-similarity regulariser.
    n_pairs
        Sub-spot pairs sampled per minibatch for the regulariser.
    use_graph
        False for the no-graph ablation (the encoder sees each spot alone).
    use_position
        Give the sub-spot decoder a position embedding (see :class:`~sslspatial.nn._superres.SubspotDecoder`).
    count_aware
        Count modalities: the sub-spot branch predicts absolute rates (explaining each spot's total count) rather
        than a composition of the observed total.
    rate_init
        Initial per-feature log-rate offset ``b`` of the count-aware branch (e.g. ``log(mean spot count / K)``).
    uniform_weight
        Weight of the uniform prior: the within-spot variance (over K) of the sub-spot branch's log-means (Gaussian:
        of its means), summed over features; 0 disables it.

    Examples
    --------
    >>> m = SuperResModule([5], ["nb"], n_subspots=4, n_subspot_features=0, n_hidden=8, n_latent=2)
    >>> x = torch.poisson(torch.full((3, 5), 4.0))
    >>> out = m.subspot_means(x, x, torch.zeros(2, 0, dtype=torch.long), torch.zeros(3, 0))
    >>> torch.allclose(out["subspot_mean"].sum(1), out["spot_mean"])
    True
    """

    def __init__(
        self,
        modality_sizes: list[int],
        likelihoods: list[str],
        n_subspots: int,
        n_subspot_features: int = 0,
        n_image_features: int = 0,
        n_hidden: int = 128,
        n_latent: int = 128,
        n_layers: int = 3,
        n_reduce: int | None = 128,
        n_hidden_decoder: int = 128,
        n_blocks: int = 2,
        image_weight: float = 1.0,
        n_pairs: int = 4096,
        use_graph: bool = True,
        use_position: bool = False,
        count_aware: bool = False,
        rate_init: list[float] | None = None,
        uniform_weight: float = 0.0,
    ):
        super().__init__()
        if len(modality_sizes) != len(likelihoods):
            raise ValueError("Give one likelihood per modality.")
        for lik in likelihoods:
            check_likelihood(lik)
        self.modality_sizes = [int(s) for s in modality_sizes]
        self.likelihoods = list(likelihoods)
        self.n_input = sum(self.modality_sizes)
        self.n_subspots = int(n_subspots)
        self.n_subspot_features = int(n_subspot_features)
        self.n_image_features = int(n_image_features)
        self.image_weight = float(image_weight)
        self.n_pairs = int(n_pairs)
        self.use_graph = bool(use_graph)
        if uniform_weight < 0:
            raise ValueError(f"uniform_weight must be >= 0 (0 disables the shrinkage), got {uniform_weight}.")
        self.uniform_weight = float(uniform_weight)
        bounds = [0]
        for s in self.modality_sizes:
            bounds.append(bounds[-1] + s)
        self.slices = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

        self.encoder = SpotGraphEncoder(self.n_input, n_hidden, n_latent, n_layers, n_reduce=n_reduce)
        n_zi = sum(s for s, lik in zip(self.modality_sizes, likelihoods, strict=True) if takes(lik, "zi_logits"))
        self.spot_decoder = nn.Sequential(
            nn.Linear(n_latent, n_hidden), nn.ReLU(), nn.Linear(n_hidden, n_hidden), nn.ReLU(),
            nn.Linear(n_hidden, self.n_input + n_zi),
        )  # fmt: skip
        self.subspot_decoder = SubspotDecoder(
            self.n_subspot_features,
            self.n_subspots,
            self.n_input,
            n_hidden_decoder,
            n_blocks,
            use_position=use_position,
        )
        self.log_theta = nn.Parameter(torch.zeros(self.n_input))  # NB / ZINB inverse dispersion
        self.log_sigma = nn.Parameter(torch.zeros(self.n_input))  # Gaussian standard deviation
        self.count_aware = bool(count_aware)
        init = torch.zeros(self.n_input) if rate_init is None else torch.as_tensor(rate_init, dtype=torch.float32)
        if init.shape != (self.n_input,):
            raise ValueError(f"rate_init needs {self.n_input} values, got {tuple(init.shape)}.")
        self.rate_bias = nn.Parameter(init.clone())  # count-aware branch: per-feature log-rate offset

    # ------------------------------------------------------------------ helpers
    def _encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        for sl, lik in zip(self.slices, self.likelihoods, strict=True):
            parts.append(torch.log1p(x[:, sl]) if is_count(lik) else x[:, sl])
        return torch.cat(parts, dim=-1)

    def _distribution(self, i: int, mean: torch.Tensor, zi_logits: torch.Tensor | None):
        lik, sl = self.likelihoods[i], self.slices[i]
        theta = self.log_theta[sl].exp() if takes(lik, "theta") else None
        sigma = self.log_sigma[sl].exp() if takes(lik, "sigma") else None
        return likelihood_distribution(lik, mean, theta=theta, zi_logits=zi_logits, sigma=sigma)

    # ------------------------------------------------------------------ scvi interface
    def _get_inference_input(self, tensors: dict, **kwargs) -> dict:
        return {
            KEYS.X_SUB_KEY: tensors[KEYS.X_SUB_KEY],
            KEYS.EDGE_INDEX_KEY: tensors[KEYS.EDGE_INDEX_KEY],
            KEYS.N_SEEDS_KEY: tensors["X"].shape[0],
        }

    def _get_generative_input(self, tensors: dict, inference_outputs: dict, **kwargs) -> dict:
        return {"z": inference_outputs["z"], "x": tensors["X"], "features": tensors[KEYS.SUBSPOT_FEATURES_KEY]}

    @auto_move_data
    def inference(self, x_sub: torch.Tensor, edge_index: torch.Tensor, n_seeds: int, n_samples: int = 1) -> dict:
        """Posterior ``qz`` (a Normal) and a sample ``z`` for the first ``n_seeds`` nodes (the seed spots)."""
        if not self.use_graph:
            x_sub, edge_index = x_sub[:n_seeds], edge_index[:, :0]
        mu, sd = self.encoder(self._encoder_input(x_sub), edge_index.long(), n_targets=n_seeds)
        qz = TorchNormal(mu, sd)
        z = qz.rsample() if n_samples == 1 else qz.rsample((n_samples,))
        return {"qz": qz, "z": z}

    @auto_move_data
    def generative(self, z: torch.Tensor, x: torch.Tensor, features: torch.Tensor) -> dict:
        """Spot fitted means, sub-spot branch means, enhanced sub-spot means and the likelihoods."""
        b, k = x.shape[0], self.n_subspots
        h = self.spot_decoder(z)
        sub = self.subspot_decoder(features.reshape(b, k, -1))
        spot_mean, branch_sum, subspot_mean, composition, zi, spread = [], [], [], [], [], []
        zi_start = self.n_input
        for sl, lik in zip(self.slices, self.likelihoods, strict=True):
            n_feat = sl.stop - sl.start
            zi.append(None)
            if not is_count(lik):
                mu = h[:, sl]
                g = sub[..., sl]  # (B, K, G_m)
                m = mu[:, None, :] / k + g - g.mean(1, keepdim=True)
                gsum = g.sum(1)
                composition.append(g)
                spread.append(_within_spot_variance(g))
            else:
                lib = x[:, sl].sum(-1, keepdim=True)
                mu = lib * torch.softmax(h[:, sl], -1) + _EPS
                logits = sub[..., sl]
                if self.count_aware:  # absolute sub-spot rates: the spot total is explained too
                    log_g = (logits + self.rate_bias[sl]).clamp(max=20.0)
                    g = torch.exp(log_g) + _EPS  # (B, K, G_m)
                    composition.append(log_g)
                else:  # shares of the observed total, one softmax jointly over (k, feature)
                    share = torch.softmax(logits.reshape(b, -1), -1).reshape(b, k, n_feat)
                    g = lib[:, None, :] * share + _EPS  # (B, K, G_m)
                    composition.append(torch.log_softmax(logits, -1))
                gsum = g.sum(1)
                spread.append(_within_spot_variance(torch.log(g)))
                m = mu[:, None, :] * (g / gsum[:, None, :])
                if takes(lik, "zi_logits"):
                    zi[-1] = h[:, zi_start : zi_start + n_feat]
                    zi_start += n_feat
            spot_mean.append(mu)
            branch_sum.append(gsum)
            subspot_mean.append(m)
        return {
            "spot_mean": torch.cat(spot_mean, -1),
            "branch_sum": torch.cat(branch_sum, -1),
            "subspot_mean": torch.cat(subspot_mean, -1),
            "composition": torch.cat(composition, -1),
            "within_spot_spread": torch.cat(spread, -1).sum(-1),
            "zi_logits": zi,
            "pz": TorchNormal(torch.zeros_like(z), torch.ones_like(z)),
        }

    def _log_likelihood(self, x: torch.Tensor, mean: torch.Tensor, zi: list) -> torch.Tensor:
        """Per-spot log-likelihood summed over features and modalities."""
        total = x.new_zeros(x.shape[0])
        for i, sl in enumerate(self.slices):
            total = total + self._distribution(i, mean[:, sl], zi[i]).log_prob(x[:, sl]).sum(-1)
        return total

    def _image_penalty(self, features: torch.Tensor, composition: torch.Tensor) -> torch.Tensor:
        if self.n_image_features == 0 or self.image_weight == 0:
            return composition.new_zeros(())
        b, k = composition.shape[:2]
        y = features.reshape(b * k, -1)[:, : self.n_image_features]
        c = composition.reshape(b * k, -1)
        n = b * k
        if n < 2:
            return composition.new_zeros(())
        i = torch.randint(0, n, (self.n_pairs,), device=c.device)
        j = torch.randint(0, n, (self.n_pairs,), device=c.device)
        d2 = ((y[i] - y[j]) ** 2).sum(-1)
        w = torch.exp(-d2 / (2 * d2.median().clamp_min(1e-8)))
        diff = ((c[i] - c[j]) ** 2).mean(-1)
        return (w * diff).sum() / w.sum().clamp_min(1e-8)

    def loss(self, tensors: dict, inference_outputs: dict, generative_outputs: dict, kl_weight: float = 1.0):
        """Negative ELBO of the spots + sub-spot-sum likelihood + image regulariser."""
        x = tensors["X"]
        zi = generative_outputs["zi_logits"]
        rec_spot = -self._log_likelihood(x, generative_outputs["spot_mean"], zi)
        rec_sum = -self._log_likelihood(x, generative_outputs["branch_sum"], zi)
        kl = kl_divergence(inference_outputs["qz"], generative_outputs["pz"]).sum(-1)
        image = self._image_penalty(tensors[KEYS.SUBSPOT_FEATURES_KEY], generative_outputs["composition"])
        spread = generative_outputs["within_spot_spread"]
        loss = (rec_spot + rec_sum + kl_weight * kl).mean() + self.image_weight * image
        if self.uniform_weight > 0:
            loss = loss + self.uniform_weight * spread.mean()
        return LossOutput(
            loss=loss,
            reconstruction_loss={"spot": rec_spot, "subspot_sum": rec_sum},
            kl_local={"kl_divergence_z": kl},
            extra_metrics={
                "image_penalty": image.detach(),
                "subspot_sum_nll": rec_sum.mean().detach(),
                "within_spot_spread": spread.mean().detach(),
            },
        )

    @torch.inference_mode()
    def sample(self, tensors: dict, n_samples: int = 1, spot_mean: str = "fitted") -> torch.Tensor:
        """Draw sub-spot profiles ``(n_samples, B, K, G)`` from the likelihood at the enhanced sub-spot means."""
        out = self.subspot_means(
            tensors["X"],
            tensors[KEYS.X_SUB_KEY],
            tensors[KEYS.EDGE_INDEX_KEY],
            tensors[KEYS.SUBSPOT_FEATURES_KEY],
            spot_mean,
        )
        m = out["subspot_mean"]
        draws = []
        for i, sl in enumerate(self.slices):
            zi = out["zi_logits"][i]
            zi = None if zi is None else zi[:, None, :].expand_as(m[..., sl])
            mean = m[..., sl] if self.likelihoods[i] == "gaussian" else m[..., sl].clamp_min(_EPS)
            draws.append(self._distribution(i, mean, zi).sample((n_samples,)))
        return torch.cat(draws, -1)

    @auto_move_data
    def subspot_means(
        self,
        x: torch.Tensor,
        x_sub: torch.Tensor,
        edge_index: torch.Tensor,
        features: torch.Tensor,
        spot_mean: str = "observed",
    ) -> dict:
        """Enhanced sub-spot profiles ``subspot_mean`` (B, K, G) and the spot profiles ``spot_mean`` (B, G) they sum to.

        ``spot_mean="observed"`` splits the measured spot ``x_n`` by the learned allocation; ``"fitted"`` splits the
        spot's fitted mean at the posterior mean of ``z`` (a denoised spot).
        """
        inf = self.inference(x_sub, edge_index, x.shape[0])
        gen = self.generative(inf["qz"].loc, x, features)
        if spot_mean == "fitted":
            return gen
        if spot_mean != "observed":
            raise ValueError(f"spot_mean must be 'observed' or 'fitted', got {spot_mean!r}.")
        parts = []
        for sl, lik in zip(self.slices, self.likelihoods, strict=True):
            m, mu = gen["subspot_mean"][..., sl], gen["spot_mean"][:, sl]
            if not is_count(lik):
                parts.append(m + (x[:, sl] - mu)[:, None, :] / self.n_subspots)
            else:
                parts.append(m / mu[:, None, :] * x[:, None, sl])
        return {**gen, "subspot_mean": torch.cat(parts, -1), "spot_mean": x}
