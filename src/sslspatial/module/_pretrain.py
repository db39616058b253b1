"""The torch module of :class:`sslspatial.model.SpatialPretrainModel`.

A pluggable encoder over k-hop subgraphs and a
pluggable objective (no AnnData in here).

A minibatch (built by :class:`sslspatial.data.SubgraphCollate`) holds the raw features ``x`` of every node of the
subgraph (seeds first), ``edge_index``, ``n_seeds`` and the full-graph ``degree``. Inputs are log1p-normalised counts
(``log1p(target_sum * x / library)``) for count likelihoods and the values as given for ``gaussian``; masked entries
(and genes missing from a transferred dataset) are replaced by a learned per-gene mask token. Latents and losses are
per seed.
"""

from __future__ import annotations

import torch
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn

from .._constants import REGISTRY_KEYS as KEYS
from ..nn import GraphEncoder, InputAdapter
from ..nn._likelihoods import check_likelihood
from ..objectives import (
    BYOL,
    OBJECTIVES,
    BarlowTwins,
    Classification,
    MaskedReconstruction,
    PseudoLabelHeads,
)
from ..objectives._base import seed_slice


class SpatialPretrainModule(BaseModuleClass):
    """Encoder + objective.

    Parameters
    ----------
    n_input
        Number of genes.
    n_latent, n_hidden, n_layers, encoder, dropout, norm, heads
        Encoder settings (see :class:`sslspatial.nn.GraphEncoder`).
    likelihood
        ``"nb"``, ``"zinb"``, ``"poisson"`` (counts) or ``"gaussian"`` (log-normalised values as given).
    objective
        ``"mask"``, ``"barlow"``, ``"byol"``, ``"pseudolabel"`` or ``"classify"``.
    objective_kwargs
        Keyword arguments of the objective class (plain values).
    gene_present
        Boolean per gene; ``False`` marks genes missing from the data (always masked, never scored).
    target_sum
        Library size counts are scaled to before ``log1p``.
    input_adapter
        Add a per-gene affine :class:`~sslspatial.nn.InputAdapter` in front of the encoder (identity until trained;
        the query-specific parameters of reference mapping with adaptation).

    Examples
    --------
    >>> module = SpatialPretrainModule(20, n_latent=4, n_hidden=8, encoder="mlp", objective="mask",
    ...                                objective_kwargs={"strategy": "entries"})
    >>> module.n_hops
    0
    """

    def __init__(
        self,
        n_input: int,
        n_latent: int = 32,
        n_hidden: int = 128,
        n_layers: int = 2,
        encoder: str = "gat",
        dropout: float = 0.1,
        norm: str = "layer",
        heads: int = 4,
        likelihood: str = "nb",
        objective: str = "mask",
        objective_kwargs: dict | None = None,
        gene_present: list[bool] | None = None,
        target_sum: float = 1e4,
        input_adapter: bool = False,
    ):
        super().__init__()
        check_likelihood(likelihood)
        if objective not in OBJECTIVES:
            raise ValueError(f"Unknown objective={objective!r}; choose one of {', '.join(map(repr, OBJECTIVES))}.")
        self.likelihood = likelihood
        self.objective_name = objective
        self.target_sum = float(target_sum)
        self.encoder = GraphEncoder(n_input, n_latent, n_hidden, n_layers, encoder, dropout, norm, heads)
        self.mask_token = nn.Parameter(torch.zeros(n_input))
        present = torch.ones(n_input, dtype=torch.bool) if gene_present is None else torch.as_tensor(gene_present)
        self.register_buffer("gene_present", present.bool(), persistent=False)
        self.input_adapter = InputAdapter(n_input) if input_adapter else None
        kwargs = dict(objective_kwargs or {})
        if objective == "mask":
            kwargs.setdefault("n_hidden", n_hidden)
            self.objective = MaskedReconstruction(n_latent, n_input, likelihood=likelihood, **kwargs)
        elif objective == "barlow":
            self.objective = BarlowTwins(n_latent, **kwargs)
        elif objective == "byol":
            self.objective = BYOL(self.encoder, n_latent, **kwargs)
        elif objective == "pseudolabel":
            self.objective = PseudoLabelHeads(n_latent, **kwargs)
        else:
            self.objective = Classification(n_latent, **kwargs)

    @property
    def n_hops(self) -> int:
        """Hops of graph context the encoder needs."""
        return self.encoder.n_hops

    @property
    def all_genes_present(self) -> bool:
        """Whether every input gene is observed (a transferred query may miss some, which are then always masked)."""
        return bool(self.gene_present.all())

    def transform(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the encoder input and the observed library size ``(n, 1)`` (over present genes)."""
        present = self.gene_present
        if not bool(present.all()):
            x = torch.where(present, x, torch.zeros_like(x))
        library = x.sum(-1, keepdim=True)
        if self.likelihood == "gaussian":
            return x, library
        x_t = torch.log1p(self.target_sum * x / library.clamp(min=1.0))
        return x_t, library.clamp(min=1.0)

    def encode(
        self,
        x_t: torch.Tensor,
        edge_index: torch.Tensor,
        degree: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        encoder: nn.Module | None = None,
        hops: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embed every node of a subgraph from transformed inputs (only the seeds when given the ``hops`` layout).

        ``mask`` entries (and missing genes) are replaced by the mask token.
        """
        encoder = encoder or self.encoder
        whole_rows = mask is not None and mask.dim() == 2 and mask.shape[1] > 1 and mask.stride(1) == 0
        if whole_rows and self.input_adapter is None and isinstance(encoder, GraphEncoder) and self.all_genes_present:
            # whole cells masked (an expanded per-cell flag): the encoder projects the mask token once for those rows,
            # and no gradient is computed for the (n_nodes, n_genes) input
            return encoder(x_t, edge_index, degree, hops, masked_rows=mask[:, 0], mask_token=self.mask_token)
        hidden = ~self.gene_present if mask is None else (mask | ~self.gene_present)
        x_in = torch.where(hidden, self.mask_token.to(x_t.dtype).expand_as(x_t), x_t)
        if self.input_adapter is not None:
            x_in = self.input_adapter(x_in)
        return encoder(x_in, edge_index, degree, hops)

    def _get_inference_input(self, tensors: dict, **kwargs) -> dict:
        return {
            "x": tensors["x"],
            KEYS.EDGE_INDEX_KEY: tensors[KEYS.EDGE_INDEX_KEY],
            KEYS.N_SEEDS_KEY: tensors[KEYS.N_SEEDS_KEY],
            KEYS.DEGREE_KEY: tensors.get(KEYS.DEGREE_KEY),
            KEYS.HOPS_KEY: tensors.get(KEYS.HOPS_KEY),
        }

    @auto_move_data
    def inference(self, x, edge_index, n_seeds, degree=None, hops=None) -> dict:
        """Transform the inputs and, unless a masked objective is training, embed the seeds (``qzm`` / ``z``)."""
        x_t, library = self.transform(x)
        out = {
            KEYS.X_T_KEY: x_t,
            KEYS.LIBRARY_KEY: library,
            KEYS.EDGE_INDEX_KEY: edge_index,
            KEYS.N_SEEDS_KEY: n_seeds,
            KEYS.DEGREE_KEY: degree,
        }
        out[KEYS.HOPS_KEY] = hops
        if not self.training or self.objective.uses_clean_latent:
            z = seed_slice(self.encode(x_t, edge_index, degree, hops=hops), n_seeds)
            out.update({"z": z, "qzm": z, "qzv": torch.zeros_like(z)})
        return out

    def _get_generative_input(self, tensors: dict, inference_outputs: dict, **kwargs) -> dict:
        return {}

    def generative(self) -> dict:
        """Nothing to generate outside the objectives (decoders live in the masked objective)."""
        return {}

    def loss(self, tensors: dict, inference_outputs: dict, generative_outputs: dict) -> LossOutput:
        """The objective's loss; the per-observation loss is per seed."""
        out = self.objective(self, tensors, inference_outputs)
        return LossOutput(
            loss=out.loss,
            reconstruction_loss=out.per_seed,
            extra_metrics=out.extras,
            n_obs_minibatch=out.per_seed.numel(),
        )

    def adaptation_loss(self, tensors: dict) -> torch.Tensor:
        """Self-supervised loss of a query minibatch that needs no query labels or pseudo-labels (adaptation).

        ``"pseudolabel"``: information maximisation over the reference's pseudo-label heads (SHOT: mean entropy of each
        seed's cluster probabilities minus the entropy of their batch mean, summed over resolutions), so query cells
        fall confidently and diversely into the reference's clusters. ``"mask"``: the masked reconstruction loss with
        the reference's decoder (scArches). Gradients reach whatever is trainable (the input adapter when mapping).
        """
        out = self.inference(**self._get_inference_input(tensors))
        if isinstance(self.objective, PseudoLabelHeads):
            return self.objective.information_maximisation(out["z"])
        if isinstance(self.objective, MaskedReconstruction):
            return self.objective(self, tensors, out).loss
        raise TypeError(
            f"objective={self.objective_name!r} has no query loss to adapt against: adaptation needs a model "
            "pretrained with ss.tl.pretrain_pseudolabel (pseudo-label heads) or ss.tl.pretrain_mask (decoder)."
        )

    def after_optimizer_step(self) -> None:
        """Hook run after every optimiser step (BYOL's EMA target update)."""
        if isinstance(self.objective, BYOL):
            self.objective.update_target(self.encoder)

    @torch.inference_mode()
    def classify(self, tensors: dict) -> torch.Tensor:
        """Class probabilities of the seeds (objective ``"classify"``)."""
        if not isinstance(self.objective, Classification):
            raise TypeError("This model has no classification head; fine-tune it with ss.tl.annotate first.")
        z = self.inference(**self._get_inference_input(tensors))["z"]
        return torch.softmax(self.objective.head(z), dim=-1)

    def sample(self, *args, **kwargs):
        """Not a generative model."""
        raise NotImplementedError("SpatialPretrainModule does not sample.")
