"""Hist2ST-style module: image patches of a window of spots -> log-normalised expression (+ count likelihood).

Loss per spot (each term switchable, for ablations):

``mse_weight * MSE(y_hat, y) + likelihood_weight * NLL(x | mu, ...) / G + distill_weight * MSE(y_hat, sg(y_teacher))``

with ``y = log1p(x / library * target_sum)``, the count mean ``mu = softmax(count head) * sum_g x`` (scaled by the
spot's size), and the teacher ``y_teacher`` the average prediction over ``n_views`` randomly rotated / flipped /
colour-jittered copies of the patches, under stop-gradient (Hist2ST's teacher has no stop-gradient, METHODS.md §3).

With ``standardize=True`` (default) the gene head predicts per-gene standardised targets, ``y_hat = m + s * head(z)``
with the training mean ``m`` and standard deviation ``s`` of each gene, and the MSE and distillation terms are
measured in those units: every gene weighs the same in the loss, as in the evaluation (the mean over genes of per-gene
Pearson correlations), instead of the few highly variable genes dominating an MSE on the raw log scale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn

from ..data._patch_loader import (
    COUNTS_KEY,
    EDGE_INDEX_KEY,
    FEATURES_KEY,
    LIBRARY_KEY,
    PATCHES_KEY,
    POSITIONS_KEY,
    ROWS_KEY,
)
from ..nn._hist2st import ConvMixerEncoder, SpotContext
from ..nn._likelihoods import COUNT_LIKELIHOODS, check_likelihood, likelihood_distribution, takes
from ..nn._likelihoods import LIKELIHOODS as _LIKELIHOODS

LIKELIHOODS = (*_LIKELIHOODS, "none")  # "none": no likelihood term, the regression loss alone


def augment_patches(patches: torch.Tensor, generator: torch.Generator | None = None, jitter: float = 0.1):
    """Random dihedral transform (rot90 x flip) and brightness / contrast jitter, independently per patch."""
    n = patches.shape[0]
    out = torch.empty_like(patches)
    code = torch.randint(0, 8, (n,), generator=generator, device="cpu").to(patches.device)
    for c in range(8):
        sel = code == c
        if sel.any():
            p = torch.rot90(patches[sel], c % 4, dims=(2, 3))
            out[sel] = torch.flip(p, dims=(3,)) if c >= 4 else p
    if jitter > 0:
        shape = (n, 1, 1, 1)
        scale = 1 + jitter * (2 * torch.rand(shape, generator=generator).to(patches.device) - 1)
        shift = jitter / 2 * (2 * torch.rand(shape, generator=generator).to(patches.device) - 1)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = ((out - mean) * scale + mean + shift).clamp(0, 1)
    return out


def log_normalize(counts: torch.Tensor, library: torch.Tensor, target_sum: float) -> torch.Tensor:
    """``log1p(counts / library * target_sum)`` with ``library`` of shape ``(n, 1)``."""
    return torch.log1p(counts / library.clamp_min(1e-8) * target_sum)


class Hist2ExprModule(BaseModuleClass):
    """ConvMixer + Transformer + GraphSAGE/JK model of spot expression from H&E patches (scvi-tools module).

    Parameters
    ----------
    n_genes
        Number of predicted genes.
    patch_px, embed_kernel, channels, convmixer_depth, mixer_kernel, down_channels
        :class:`~sslspatial.nn._hist2st.ConvMixerEncoder` settings.
    dim, n_pos, transformer_depth, heads, gnn_depth, jk
        :class:`~sslspatial.nn._hist2st.SpotContext` settings.
    dropout
        Dropout rate.
    likelihood
        Count likelihood: ``"zinb"``, ``"nb"``, ``"poisson"``, ``"gaussian"`` (on the log-normalised target) or
        ``"none"``.
    mse_weight, likelihood_weight, distill_weight
        Weights of the three loss terms (0 switches a term off).
    n_views
        Augmented views averaged into the distillation teacher.
    augment
        Randomly rotate / flip / jitter the training patches.
    target_sum
        Library size the targets are normalised to.
    n_features
        Width of precomputed image features given with every spot (0: none), standardised with the buffers
        ``feature_mean`` / ``feature_std`` and concatenated to the ConvMixer output.
    use_patches
        Encode the patches with the ConvMixer (False: precomputed features only).
    standardize
        Predict per-gene standardised targets (buffers ``target_mean`` / ``target_std``, set by the model from its
        training table) so that every gene weighs the same in the MSE and distillation terms.
    n_components
        Denoised predictions: outside training, the standardised predictions are projected onto the leading
        ``n_components`` principal axes of the standardised training targets (buffer ``gene_basis``, set by the
        model), the subspace where the genes co-vary; what a model predicts along the remaining, mostly noise,
        directions of single genes is dropped. Training is unchanged. None (or at least as many as genes): no
        projection. Only with ``standardize=True``. The default, 10, was chosen on her2st folds B4 and C5 (see the
        benchmark).
    centre_sections
        Fit only the variation within each training section: in the training loss, the prediction of a spot is
        shifted by its section's mean target minus the mean over all training spots (set by the model from its
        training table, :meth:`set_section_offsets`), so section-wide shifts (sequencing depth, batch) need not be
        read from the image. Predictions carry no offset: they sit at the training spots' mean level. Evaluation
        within a section (per-gene Pearson) is blind to such shifts anyway. Off by default: on her2st
        leave-one-section-out it helped the shallow section B4 and hurt two others, no change on average (the
        benchmark's ``hist2expr_section_centring`` rows).
    freeze_encoder
        Keep the patch encoder fixed (e.g. pretrained without expression by ``ss.tl.pretrain_image``): its weights get
        no gradient and its batch-norm statistics stay as they are (the encoder stays in eval mode during training).
    """

    def __init__(
        self,
        n_genes: int,
        patch_px: int = 32,
        embed_kernel: int = 4,
        channels: int = 32,
        convmixer_depth: int = 2,
        mixer_kernel: int = 5,
        down_channels: int = 4,
        dim: int = 128,
        n_pos: int = 0,
        transformer_depth: int = 1,
        heads: int = 4,
        gnn_depth: int = 2,
        jk: str = "lstm",
        dropout: float = 0.3,
        likelihood: str = "zinb",
        mse_weight: float = 1.0,
        likelihood_weight: float = 0.25,
        distill_weight: float = 0.5,
        n_views: int = 2,
        augment: bool = True,
        target_sum: float = 1e4,
        n_features: int = 0,
        use_patches: bool = True,
        standardize: bool = True,
        n_components: int | None = 10,
        centre_sections: bool = False,
        freeze_encoder: bool = False,
    ):
        super().__init__()
        check_likelihood(likelihood, extra=("none",))
        if mse_weight <= 0 and (likelihood == "none" or likelihood_weight <= 0):
            raise ValueError("With mse_weight=0 a likelihood term is needed: every supervised loss term is off.")
        self.patch_px = patch_px
        self.likelihood, self.target_sum, self.augment, self.n_views = likelihood, target_sum, augment, n_views
        self.mse_weight, self.likelihood_weight, self.distill_weight = mse_weight, likelihood_weight, distill_weight
        if not use_patches and not n_features:
            raise ValueError("use_patches=False needs precomputed image features (n_features > 0).")
        self.use_patches, self.n_features = use_patches, n_features
        self.encoder = ConvMixerEncoder(patch_px, embed_kernel, channels, convmixer_depth, mixer_kernel,
                                        down_channels, dropout)  # fmt: skip
        self.freeze_encoder = bool(freeze_encoder)
        if self.freeze_encoder:
            self.encoder.requires_grad_(False)
            self.encoder.eval()
        self.standardize = bool(standardize)
        if n_components is not None and n_components < 1:
            raise ValueError(f"n_components={n_components} must be a positive number of principal axes, or None.")
        # as many axes as genes (or no standardisation): nothing to project
        self.n_components = n_components if n_components and self.standardize and n_components < n_genes else None
        if self.n_components is not None:
            self.register_buffer("gene_basis", torch.eye(self.n_components, n_genes))
        self.register_buffer("target_mean", torch.zeros(n_genes))
        self.register_buffer("target_std", torch.ones(n_genes))
        self.centre_sections = bool(centre_sections)
        # training-only state (not saved): section index of every registered row (-1: none) and per-section offsets
        self.register_buffer("row_section", torch.zeros(0, dtype=torch.long), persistent=False)
        self.register_buffer("section_offsets", torch.zeros(0, n_genes), persistent=False)
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        in_dim = (self.encoder.out_dim if use_patches else 0) + n_features
        self.context = SpotContext(in_dim, dim, n_pos, transformer_depth, heads, gnn_depth, jk, dropout)
        self.gene_head = nn.Linear(self.context.out_dim, n_genes)
        if likelihood in COUNT_LIKELIHOODS:
            self.count_head = nn.Linear(self.context.out_dim, n_genes)
        if takes(likelihood, "theta"):
            self.log_theta = nn.Parameter(torch.zeros(n_genes))
        if takes(likelihood, "zi_logits"):
            self.zi_head = nn.Linear(self.context.out_dim, n_genes)
        if takes(likelihood, "sigma"):
            self.log_sigma = nn.Parameter(torch.zeros(n_genes))

    def train(self, mode: bool = True):
        """Training / eval mode; a frozen encoder (``freeze_encoder``) always stays in eval mode."""
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def set_gene_basis(self, basis: torch.Tensor) -> None:
        """Orthonormal rows ``(n_components, n_genes)``: principal axes of the standardised training targets."""
        self.gene_basis.copy_(torch.as_tensor(basis, dtype=torch.float32))

    def set_target_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-gene mean and standard deviation of the training targets (used with ``standardize=True``)."""
        self.target_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.target_std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-3))

    def set_section_offsets(self, row_section: torch.Tensor, offsets: torch.Tensor) -> None:
        """Section index of every registered row (``-1``: not a training spot) and ``(n_sections, n_genes)`` offsets.

        Each offset is that section's mean target ``log1p(x / library * target_sum)`` minus the training mean
        (``target_mean``); used in the training loss when ``centre_sections=True``.
        """
        device = self.target_mean.device
        self.row_section = torch.as_tensor(row_section, dtype=torch.long, device=device)
        self.section_offsets = torch.as_tensor(offsets, dtype=torch.float32, device=device)

    def section_offset(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor | float:
        """The training-loss shift of each spot of a window (0 outside training or without offsets)."""
        if not (self.training and self.centre_sections and len(self.section_offsets) and ROWS_KEY in tensors):
            return 0.0
        sections = self.row_section[tensors[ROWS_KEY].long()]
        if bool((sections < 0).any()):
            raise ValueError("A training window holds spots outside the sections the offsets were computed for.")
        return self.section_offsets[sections]

    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {k: tensors[k] for k in (PATCHES_KEY, POSITIONS_KEY, EDGE_INDEX_KEY)}
        if self.n_features:
            if FEATURES_KEY not in tensors:
                raise KeyError("This model uses precomputed image features, but the batch has none.")
            out[FEATURES_KEY] = tensors[FEATURES_KEY]
        return out

    def spot_vectors(self, patches: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        """Per-spot image vectors: ConvMixer output and / or standardised precomputed features."""
        parts = [self.encoder(patches)] if self.use_patches else []
        if self.n_features:
            parts.append((features - self.feature_mean) / self.feature_std)
        return torch.cat(parts, dim=1)

    def _get_generative_input(self, tensors, inference_outputs) -> dict[str, torch.Tensor]:
        return {"z": inference_outputs["z"]}

    @auto_move_data
    def inference(
        self, patches: torch.Tensor, positions: torch.Tensor, edge_index: torch.Tensor, features=None
    ) -> dict:
        """Spot representations ``z`` ``(n, d)`` of a window (patches augmented when training)."""
        if self.training and self.augment and self.use_patches:
            patches = augment_patches(patches)
        return {"z": self.context(self.spot_vectors(patches, features), positions, edge_index)}

    @auto_move_data
    def generative(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predicted log-normalised expression ``y_hat`` and count-distribution parameters."""
        head = self.gene_head(z)
        if self.n_components is not None and not self.training:  # onto the principal axes of the training targets
            head = (head @ self.gene_basis.T) @ self.gene_basis
        out = {"y_hat": self.target_mean + self.target_std * head if self.standardize else head}
        if hasattr(self, "count_head"):
            out["rate"] = torch.softmax(self.count_head(z), dim=-1)
            if self.mse_weight == 0:  # no regression head training: predict from the count model's mean proportions
                out["y_hat"] = torch.log1p(out["rate"] * self.target_sum)
        if hasattr(self, "zi_head"):
            out["zi_logits"] = self.zi_head(z)
        return out

    def count_distribution(self, generative_outputs: dict, counts: torch.Tensor, target: torch.Tensor, offset=0.0):
        """The likelihood of the counts (or of the log-normalised target for ``"gaussian"``, shifted by ``offset``)."""
        if takes(self.likelihood, "sigma"):
            return likelihood_distribution(
                "gaussian", generative_outputs["y_hat"] + offset, sigma=self.log_sigma.exp()
            ), target
        mu = generative_outputs["rate"] * counts.sum(-1, keepdim=True).clamp_min(1.0)
        theta = self.log_theta.exp() if hasattr(self, "log_theta") else None
        return likelihood_distribution(
            self.likelihood, mu, theta=theta, zi_logits=generative_outputs.get("zi_logits")
        ), counts

    def teacher(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Average prediction over ``n_views`` augmented copies of the window (no gradient)."""
        with torch.no_grad():
            preds = []
            for _ in range(self.n_views):
                patches = augment_patches(tensors[PATCHES_KEY])
                vectors = self.spot_vectors(patches, tensors.get(FEATURES_KEY))
                z = self.context(vectors, tensors[POSITIONS_KEY], tensors[EDGE_INDEX_KEY])
                preds.append(self.generative(z)["y_hat"])
            return torch.stack(preds).mean(0)

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict,
        generative_outputs: dict,
        mse_weight: float | None = None,
        likelihood_weight: float | None = None,
        distill_weight: float | None = None,
        **kwargs,
    ) -> LossOutput:
        """Per-spot MSE + weighted NLL (mean over genes) + distillation; ``extra_metrics`` report each term."""
        w_mse = self.mse_weight if mse_weight is None else mse_weight
        w_lik = self.likelihood_weight if likelihood_weight is None else likelihood_weight
        w_dis = self.distill_weight if distill_weight is None else distill_weight
        counts, library = tensors[COUNTS_KEY], tensors[LIBRARY_KEY]
        target = log_normalize(counts, library, self.target_sum)
        y_hat = generative_outputs["y_hat"]
        offset = self.section_offset(tensors)  # the spot's section mean, during training (centre_sections)
        scale = self.target_std if self.standardize else torch.ones_like(self.target_std)
        mse = F.mse_loss((y_hat + offset) / scale, target / scale, reduction="none").mean(-1)
        zero = torch.zeros_like(mse)
        nll = zero
        if self.likelihood != "none" and w_lik > 0:
            dist, value = self.count_distribution(generative_outputs, counts, target, offset)
            nll = -dist.log_prob(value).mean(-1)
        distill = zero
        if self.training and w_dis > 0 and self.n_views > 0:
            distill = F.mse_loss(y_hat / scale, self.teacher(tensors) / scale, reduction="none").mean(-1)
        total = w_mse * mse + w_lik * nll + w_dis * distill
        return LossOutput(
            loss=total.mean(),
            reconstruction_loss={"mse": w_mse * mse, "nll": w_lik * nll, "distill": w_dis * distill},
            extra_metrics={"mse": mse.mean().detach(), "nll": nll.mean().detach(), "distill": distill.mean().detach()},
        )
