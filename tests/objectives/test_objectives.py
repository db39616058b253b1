"""Objectives: masked losses score masked entries only, Barlow Twins / BYOL / pseudo-label / classification values
against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scvi.distributions import NegativeBinomial, Normal, Poisson

from sslspatial.module import SpatialPretrainModule
from sslspatial.objectives import (
    BYOL,
    Classification,
    barlow_twins_loss,
    byol_loss,
    kmeans_pseudolabels,
    mask_cells,
    mask_celltype,
    mask_entries,
    mask_programmes,
    masked_nll,
    n_clusters,
    restricted_cross_entropy,
)


def _batch(n_nodes=12, n_genes=6, n_seeds=4, seed=0):
    """A random subgraph: a ring over the nodes, Poisson counts."""
    g = torch.Generator().manual_seed(seed)
    x = torch.poisson(torch.full((n_nodes, n_genes), 3.0), generator=g)
    ring = torch.arange(n_nodes)
    edge_index = torch.cat([torch.stack([ring, (ring + 1) % n_nodes]), torch.stack([(ring + 1) % n_nodes, ring])], 1)
    return {"x": x, "edge_index": edge_index, "n_seeds": torch.tensor(n_seeds), "degree": torch.full((n_nodes,), 2)}


# ---------------------------------------------------------------- masks
def test_mask_cells_masks_whole_rows_at_the_rate_among_seeds_and_others():
    m = mask_cells(110, 7, 10, 0.2)
    rows = m.all(1)
    assert torch.equal(rows, m.any(1))  # whole rows only
    assert int(rows[:10].sum()) == 2 and int(rows[10:].sum()) == 20


def test_mask_entries_rate():
    torch.manual_seed(1)
    assert abs(float(mask_entries(400, 50, 0.3).float().mean()) - 0.3) < 0.02


def test_mask_programmes_is_a_union_of_programmes():
    membership = torch.zeros(4, 10, dtype=torch.bool)
    for p in range(4):
        membership[p, 2 * p : 2 * p + 3] = True  # overlapping programmes
    m = mask_programmes(50, membership, 0.5)  # two programmes per cell
    for row in m:
        unions = [membership[a] | membership[b] for a in range(4) for b in range(a + 1, 4)]
        assert any(torch.equal(row, u) for u in unions)


def test_mask_celltype_masks_one_type_present_among_seeds():
    types = torch.tensor([0, 0, 3, 1, 3, 2, -1])
    for _ in range(10):
        rows = mask_celltype(types, 3, 2).all(1)
        chosen = set(types[rows].tolist())
        assert len(chosen) == 1 and chosen <= {0, 3}
        assert torch.equal(rows, types == next(iter(chosen)))


# ---------------------------------------------------------------- masked likelihoods
@pytest.mark.parametrize("kind", ["nb", "poisson", "gaussian"])
def test_masked_nll_ignores_unmasked_targets_and_matches_hand_value(kind):
    mu = torch.tensor([[2.0, 3.0, 0.5], [1.0, 4.0, 2.0]])
    dist = {
        "nb": NegativeBinomial(mu=mu, theta=torch.full_like(mu, 2.0)),
        "poisson": Poisson(mu),
        "gaussian": Normal(mu, torch.ones_like(mu)),
    }[kind]
    target = torch.tensor([[1.0, 0.0, 2.0], [3.0, 1.0, 0.0]])
    mask = torch.tensor([[True, False, True], [False, False, True]])
    mean, rows = masked_nll(dist, target, mask)
    full = -dist.log_prob(target)
    assert torch.allclose(rows, (full * mask).sum(1), atol=1e-5)
    assert torch.isclose(mean, full[mask].mean(), atol=1e-5)
    perturbed = torch.where(mask, target, torch.full_like(target, 99.0))
    assert torch.allclose(masked_nll(dist, perturbed, mask)[0], mean)
    changed = torch.where(mask, target + 5, target)
    assert not torch.allclose(masked_nll(dist, changed, mask)[0], mean)


@pytest.mark.parametrize(
    ("strategy", "likelihood", "kwargs"),
    [
        ("cells", "nb", {}),
        ("entries", "zinb", {}),
        ("programmes", "poisson", {"programmes": [[0, 1], [2, 3], [4, 5]]}),
        ("celltype", "gaussian", {}),
    ],
)
def test_module_reconstruction_scores_only_masked_seed_entries(strategy, likelihood, kwargs):
    """Perturbing unmasked targets (or any non-seed target) leaves the loss unchanged; masked seed targets change it."""
    module = SpatialPretrainModule(
        6,
        n_latent=4,
        n_hidden=8,
        encoder="gat",
        heads=2,
        likelihood=likelihood,
        objective="mask",
        objective_kwargs={"strategy": strategy, **kwargs},
    )
    batch = _batch()
    batch["target_celltype"] = torch.tensor([0, 1, 0, 1] * 3)
    module.eval()  # no dropout: the encoder output is a deterministic function of the input
    inference = module.inference(**module._get_inference_input(batch))
    mask = module.objective.sample_mask(batch, 4)
    scored = mask.clone()
    scored[4:] = False
    assert scored.any()
    base = module.objective.reconstruction(module, inference, batch["x"], mask)
    noise = torch.poisson(torch.full_like(batch["x"], 7.0)) + 1
    unmasked_changed = torch.where(scored, batch["x"], noise)
    same = module.objective.reconstruction(module, inference, unmasked_changed, mask)
    assert torch.allclose(same.loss, base.loss) and torch.allclose(same.per_seed, base.per_seed)
    masked_changed = torch.where(scored, noise, batch["x"])
    assert not torch.allclose(module.objective.reconstruction(module, inference, masked_changed, mask).loss, base.loss)
    # seeds without a masked entry contribute nothing
    assert torch.all(base.per_seed[~scored[:4].any(1)] == 0)


def test_masked_input_hides_the_values():
    """A masked cell's own values do not reach the encoder: changing them leaves every embedding unchanged."""
    module = SpatialPretrainModule(6, n_latent=4, n_hidden=8, encoder="sage", objective="mask")
    module.eval()
    batch = _batch()
    x_t, _ = module.transform(batch["x"])
    mask = torch.zeros_like(x_t, dtype=torch.bool)
    mask[2] = True
    z = module.encode(x_t, batch["edge_index"], mask=mask)
    x_t2 = x_t.clone()
    x_t2[2] += 3.0
    assert torch.allclose(module.encode(x_t2, batch["edge_index"], mask=mask), z)


def test_missing_genes_are_never_scored():
    module = SpatialPretrainModule(
        6,
        n_latent=4,
        n_hidden=8,
        encoder="mlp",
        objective="mask",
        objective_kwargs={"strategy": "entries", "fraction": 1.0},
        gene_present=[True, True, False, True, False, True],
    )
    module.eval()
    batch = _batch()
    inference = module.inference(**module._get_inference_input(batch))
    mask = torch.ones_like(batch["x"], dtype=torch.bool)
    base = module.objective.reconstruction(module, inference, batch["x"], mask)
    changed = batch["x"].clone()
    changed[:, [2, 4]] += 10
    assert torch.allclose(module.objective.reconstruction(module, inference, changed, mask).loss, base.loss)


# ---------------------------------------------------------------- joint embedding
def test_barlow_twins_loss_hand_computed():
    z1 = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    z2 = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [0.0, 1.0], [0.0, -1.0]])
    # standardised: z1 cols have std sqrt(0.5); C = z1n^T z2n / 4
    z1n = z1 / np.sqrt(0.5)
    z2n = z2 / z2.std(0, unbiased=False)
    c = (z1n.T @ z2n / 4).numpy()
    expected = ((np.diag(c) - 1) ** 2).sum() + 0.1 * (c**2).sum() - 0.1 * (np.diag(c) ** 2).sum()
    assert np.isclose(float(barlow_twins_loss(z1, z2, lambd=0.1)), expected, atol=1e-4)


def test_byol_loss_values():
    online = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    target = torch.tensor([[0.0, 1.0], [2.0, 2.0]])
    assert torch.allclose(byol_loss(online, target), torch.tensor([2.0, 0.0]), atol=1e-6)


def test_byol_target_is_an_ema_of_the_online_network():
    module = SpatialPretrainModule(
        6, n_latent=4, n_hidden=8, encoder="gat", heads=2, objective="byol", objective_kwargs={"tau": 0.9}
    )
    obj: BYOL = module.objective
    before = [p.clone() for p in obj.target_encoder.parameters()]
    with torch.no_grad():
        for p in module.encoder.parameters():
            p.add_(1.0)
    module.after_optimizer_step()
    for b, t, o in zip(before, obj.target_encoder.parameters(), module.encoder.parameters(), strict=True):
        assert torch.allclose(t, 0.9 * b + 0.1 * o, atol=1e-6)
    assert not any(p.requires_grad for p in obj.target_encoder.parameters())


# ---------------------------------------------------------------- pseudo-labels and classification
def test_n_clusters_follow_scpretrain():
    assert n_clusters(1000) == [10, 20, 6]
    assert n_clusters(150) == [2, 3, 2]


def test_kmeans_pseudolabels_per_section_ranges():
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 1, (200, 3)), rng.normal(5, 1, (100, 3))]
    sections = np.r_[["a"] * 200, ["b"] * 100]
    targets, sizes = kmeans_pseudolabels(x, sections)
    assert sizes == [n_clusters(200)[r] + n_clusters(100)[r] for r in range(3)]
    for r in range(3):
        lab, lo, hi = targets[:, r].T
        assert np.all((lab >= lo) & (lab < hi))
        assert np.all(lo[:200] == 0) and np.all(lo[200:] == n_clusters(200)[r])
        assert len(np.unique(lab[:200])) == n_clusters(200)[r]


def test_restricted_cross_entropy_hand_value():
    logits = torch.tensor([[1.0, 2.0, 3.0, 50.0]])
    got = restricted_cross_entropy(logits, torch.tensor([[1, 0, 3]]))
    expected = -np.log(np.exp(2) / (np.exp(1) + np.exp(2) + np.exp(3)))
    assert np.isclose(float(got), expected, atol=1e-5)


def test_pseudolabel_and_classification_score_seeds_only():
    batch = _batch()
    for objective, kwargs, key, values in [
        ("pseudolabel", {"sizes": [3, 2]}, "target_pseudolabels", torch.tensor([[[0, 0, 3], [1, 0, 2]]] * 12)),
        (
            "classify",
            {"n_classes": 3, "class_weights": [1.0, 2.0, 1.0]},
            "target_labels",
            torch.tensor([0, 1, -1, 2] * 3),
        ),
    ]:
        module = SpatialPretrainModule(
            6, n_latent=4, n_hidden=8, encoder="gcn", objective=objective, objective_kwargs=kwargs
        )
        module.eval()
        batch[key] = values.clone()
        inference = module.inference(**module._get_inference_input(batch))
        base = module.objective(module, batch, inference)
        batch[key] = values.clone()
        batch[key][4:] = 0  # non-seed targets are irrelevant
        assert torch.allclose(module.objective(module, batch, inference).loss, base.loss)


def test_classification_weighted_ce_hand_value_and_ignores_unlabelled():
    obj = Classification(2, 2, class_weights=[1.0, 3.0], dropout=0.0)
    with torch.no_grad():
        obj.head.weight.copy_(torch.eye(2))
        obj.head.bias.zero_()
    z = torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    out = obj(None, {"target_labels": torch.tensor([0, 1, -1])}, {"z": z, "n_seeds": torch.tensor(3)})
    ce0 = -np.log(np.exp(2) / (np.exp(2) + 1))
    ce1 = -np.log(np.exp(1) / (np.exp(1) + 1))
    assert np.isclose(float(out.loss), (ce0 + 3 * ce1) / 4, atol=1e-5)
    assert float(out.per_seed[2]) == 0.0


def test_sparse_and_dense_identical_inputs():
    """Transform of counts: log1p(1e4 x / library) over present genes."""
    module = SpatialPretrainModule(3, encoder="mlp", objective="mask", objective_kwargs={"strategy": "entries"})
    x = torch.tensor([[1.0, 3.0, 0.0]])
    x_t, lib = module.transform(x)
    assert torch.allclose(x_t, torch.log1p(1e4 * x / 4)) and float(lib) == 4.0
    assert sp.issparse(sp.csr_matrix(x.numpy()))


# ---------------------------------------------------------------- fast paths (issue 16 throughput)
def test_gene_dispersion_nb_matches_scvi_values_and_gradients():
    from sslspatial.nn import GeneDispersionNB

    g = torch.Generator().manual_seed(1)
    x = torch.poisson(torch.full((9, 5), 2.0), generator=g)
    mu = (torch.rand(9, 5, generator=g) * 4 + 0.05).requires_grad_()
    log_theta = torch.randn(5, generator=g).requires_grad_()
    ours = GeneDispersionNB(mu, log_theta.exp()).log_prob(x).sum()
    grads = torch.autograd.grad(ours, [mu, log_theta])
    theirs = NegativeBinomial(mu=mu, theta=log_theta.exp().expand_as(mu)).log_prob(x).sum()
    expected = torch.autograd.grad(theirs, [mu, log_theta])
    assert torch.allclose(ours, theirs, rtol=1e-5)
    for a, b in zip(grads, expected, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="one theta per gene"):
        GeneDispersionNB(mu, log_theta.exp().expand_as(mu))


def test_whole_cell_mask_view_gives_the_dense_mask_embedding_and_token_gradient():
    torch.manual_seed(0)
    module = SpatialPretrainModule(12, n_latent=4, n_hidden=8, heads=2).eval()
    batch = _batch(n_nodes=30, n_genes=12, n_seeds=10)
    with torch.no_grad():
        module.mask_token.normal_()
    x_t, _ = module.transform(batch["x"])
    mask = mask_cells(30, 12, 10, 0.3)
    assert mask.stride(1) == 0  # the view that selects the fast path
    outputs, token_grads = [], []
    for m in (mask, mask.clone()):  # fast path, then the dense where() path
        module.zero_grad()
        z = module.encode(x_t, batch["edge_index"], mask=m)
        z.square().sum().backward()
        outputs.append(z.detach())
        token_grads.append(module.mask_token.grad.clone())
    assert torch.allclose(outputs[0], outputs[1], atol=1e-5)
    assert token_grads[0].abs().sum() > 0
    assert torch.allclose(token_grads[0], token_grads[1], rtol=1e-4, atol=1e-4)


def test_cpu_dropout_rate_scale_and_eval_identity():
    from sslspatial.nn._graph_encoders import Dropout

    torch.manual_seed(0)
    x = torch.rand(400, 250) + 0.5
    layer = Dropout(0.1)
    out = layer(x)
    dropped = out == 0
    assert abs(float(dropped.float().mean()) - 0.1) < 0.005
    assert torch.allclose(out[~dropped], x[~dropped] / 0.9)
    assert not torch.equal(layer(x) == 0, dropped)  # a new mask every call
    assert torch.equal(layer.eval()(x), x)
