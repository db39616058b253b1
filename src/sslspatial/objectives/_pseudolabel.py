"""scPretrain-style multi-task pseudo-label pretraining.

K-means labellings at several resolutions per section (``K = n / 100``, ``n / 50``, ``n / 200 + 1``), one
classification head per resolution, cross-entropy on the raw logits (not on ``sigmoid(logits)``), restricted to the
clusters of the cell's own section.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._constants import REGISTRY_KEYS as KEYS
from ._base import ObjectiveOutput, seed_slice
from ._masking import mask_entries

#: ``(divisor, offset)`` of each resolution: ``K = floor(n / divisor) + offset`` (scPretrain), at least 2.
RESOLUTIONS = ((100, 0), (50, 0), (200, 1))


def n_clusters(n_cells: int, resolutions=RESOLUTIONS) -> list[int]:
    """Number of clusters per resolution for a section of ``n_cells`` cells (at least 2, at most ``n_cells``).

    Examples
    --------
    >>> n_clusters(1000)
    [10, 20, 6]
    """
    return [int(min(max(n_cells // d + o, 2), n_cells)) for d, o in resolutions]


def kmeans_pseudolabels(
    features: np.ndarray, sections=None, resolutions=RESOLUTIONS, seed: int = 0
) -> tuple[np.ndarray, list[int]]:
    """K-means pseudo-labels per section and resolution.

    Parameters
    ----------
    features
        ``(n, d)`` features to cluster (e.g. PCA of log-normalised expression).
    sections
        Section of every cell (clustered separately); ``None`` for one section.
    resolutions
        ``(divisor, offset)`` pairs.
    seed
        Random seed.

    Returns
    -------
    ``targets`` of shape ``(n, R, 3)`` holding, per resolution, the global cluster id and the ``[lo, hi)`` range of
    the cell's section's clusters; and the total number of clusters per resolution.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> targets, sizes = kmeans_pseudolabels(rng.normal(size=(300, 5)), np.repeat(["a", "b"], 150))
    >>> sizes
    [4, 6, 4]
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans

    features = np.asarray(features, dtype=np.float32)
    sections = np.zeros(len(features), dtype=int) if sections is None else np.asarray(sections)
    targets = np.zeros((len(features), len(resolutions), 3), dtype=np.int64)
    offsets = [0] * len(resolutions)
    for section in np.unique(sections):
        idx = np.flatnonzero(sections == section)
        for r, k in enumerate(n_clusters(idx.size, resolutions)):
            cls = KMeans if idx.size <= 20_000 else MiniBatchKMeans
            labels = cls(n_clusters=k, n_init=1, random_state=seed, max_iter=50).fit_predict(features[idx])
            targets[idx, r, 0] = offsets[r] + labels
            targets[idx, r, 1] = offsets[r]
            targets[idx, r, 2] = offsets[r] + k
            offsets[r] += k
    return targets, offsets


def restricted_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-row cross-entropy over the logits in ``[lo, hi)`` only; ``targets`` is ``(n, 3)`` = (label, lo, hi).

    Examples
    --------
    >>> logits = torch.tensor([[0.0, 0.0, 100.0]])
    >>> restricted_cross_entropy(logits, torch.tensor([[0, 0, 2]])).tolist()  # class 2 is out of range
    [0.6931471824645996]
    """
    cols = torch.arange(logits.shape[1], device=logits.device)
    inside = (cols >= targets[:, 1:2]) & (cols < targets[:, 2:3])
    return F.cross_entropy(logits.masked_fill(~inside, float("-inf")), targets[:, 0], reduction="none")


class PseudoLabelHeads(nn.Module):
    """One linear head per resolution on the seed embeddings; loss = sum over resolutions of the restricted CE.

    Examples
    --------
    >>> PseudoLabelHeads(8, [10, 20, 6]).sizes
    [10, 20, 6]
    """

    def __init__(self, n_latent: int, sizes: list[int], dropout: float = 0.1, gene_dropout: float = 0.0):
        super().__init__()
        if not sizes:
            raise ValueError("objective='pseudolabel' needs the cluster counts (see kmeans_pseudolabels).")
        if not 0.0 <= gene_dropout < 1.0:
            raise ValueError(f"gene_dropout must be in [0, 1), got {gene_dropout}.")
        self.sizes = [int(s) for s in sizes]
        self.dropout = nn.Dropout(dropout)
        self.gene_dropout = float(gene_dropout)
        self.heads = nn.ModuleList([nn.Linear(n_latent, s) for s in self.sizes])

    @property
    def uses_clean_latent(self) -> bool:
        """Whether training reads the unmasked embedding (not with ``gene_dropout``, which encodes its own)."""
        return self.gene_dropout == 0.0

    def forward(self, module, batch: dict, inference_outputs: dict) -> ObjectiveOutput:
        """Multi-task cross-entropy of the seeds (encoded with a random ``gene_dropout`` of their inputs hidden)."""
        n_seeds = int(inference_outputs[KEYS.N_SEEDS_KEY])
        if KEYS.TARGET_PREFIX + "pseudolabels" not in batch:
            raise KeyError("objective='pseudolabel' needs targets={'pseudolabels': ...} when training.")
        if "z" in inference_outputs:
            z = inference_outputs["z"]
        else:  # every input entry hidden behind the mask token with probability gene_dropout
            x_t = inference_outputs[KEYS.X_T_KEY]
            hidden = mask_entries(x_t.shape[0], x_t.shape[1], self.gene_dropout, x_t.device)
            z = module.encode(x_t, inference_outputs[KEYS.EDGE_INDEX_KEY], inference_outputs.get(KEYS.DEGREE_KEY), mask=hidden,
                              hops=inference_outputs.get(KEYS.HOPS_KEY))  # fmt: skip
            z = seed_slice(z, n_seeds)
        z = self.dropout(z)
        targets = seed_slice(batch[KEYS.TARGET_PREFIX + "pseudolabels"], n_seeds).long()
        per_seed = sum(restricted_cross_entropy(h(z), targets[:, r]) for r, h in enumerate(self.heads))
        return ObjectiveOutput(per_seed.mean(), per_seed.detach(), {})

    def information_maximisation(self, z: torch.Tensor) -> torch.Tensor:
        """Label-free loss of new cells under the fitted heads (SHOT's information maximisation), without dropout.

        Per resolution: the mean entropy of each cell's cluster probabilities (low when cells fall clearly into one
        reference cluster) minus the entropy of their mean (high when the cells spread over the clusters, which
        rules out mapping every cell to one cluster); summed over resolutions.

        Examples
        --------
        >>> heads = PseudoLabelHeads(4, [3, 5])
        >>> float(heads.information_maximisation(torch.zeros(6, 4))) <= 1e-6  # uniform: both entropies equal
        True
        """
        total = z.new_zeros(())
        for head in self.heads:
            logp = torch.log_softmax(head(z), dim=-1)
            p = logp.exp()
            conditional = -(p * logp).sum(-1).mean()
            mean = p.mean(0)
            total = total + conditional + (mean * torch.log(mean.clamp(min=1e-12))).sum()
        return total
