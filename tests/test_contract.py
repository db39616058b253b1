"""The API contract of docs/contract.md, checked on every public function of ``ss.tl``.

Static checks read the signatures; the dynamic check runs each function twice on a tiny synthetic tissue: the first
run writes ``uns[key_added]`` (function, parameters, version), the second raises ``ss.OutputExistsError``.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Sequence

import numpy as np
import pytest

import sslspatial as ss

TL = sorted(name for name in ss.tl.__all__ if callable(getattr(ss.tl, name)))
#: Inputs that may come before the keyword-only options (everything else must be keyword-only).
POSITIONAL = {
    "annotate": ("data", "model", "labels_key"),
    "map_query": ("data", "model", "labels_key"),
    "transfer": ("data", "model"),
}
#: Model-independent names and the one default each must have wherever it appears.
SHARED_DEFAULTS = {
    "table_key": "table",
    "layer": None,
    "overwrite": False,
    "seed": 0,
    "accelerator": "auto",
    "devices": "auto",
    "model_kwargs": None,
    "train_kwargs": None,
}
#: Every function has these; every function that trains (has ``max_epochs``) also has the trainer options.
EVERYWHERE = ("table_key", "key_added", "overwrite")
TRAINER_OPTIONS = ("seed", "accelerator", "devices", "train_kwargs", "max_epochs", "lr")
#: Parameters whose values form a closed set: they must be typed ``Literal[...]`` (or a sequence of one).
CLOSED_OPTIONS = ("method", "mask", "encoder", "likelihood", "layout", "spot_mean", "size_unit", "candidates")


def _signature(name):
    return inspect.signature(getattr(ss.tl, name))


def _is_literal(hint) -> bool:
    if typing.get_origin(hint) is typing.Literal:
        return True
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_is_literal(a) for a in args if a is not type(None))
    origin = typing.get_origin(hint)
    return bool(origin and isinstance(origin, type) and issubclass(origin, Sequence) and args and _is_literal(args[0]))


@pytest.mark.parametrize("name", TL)
def test_signature_follows_the_contract(name):
    params = _signature(name).parameters
    first = next(iter(params))
    assert first == "data", f"ss.tl.{name}: the first parameter must be `data`, not {first!r}"
    allowed = POSITIONAL.get(name, ("data",))
    for param in params.values():
        assert param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL), f"ss.tl.{name}: no *args / **kwargs"
        if param.name not in allowed:
            assert param.kind is param.KEYWORD_ONLY, f"ss.tl.{name}: {param.name!r} must be keyword-only"
    for option in EVERYWHERE:
        assert option in params, f"ss.tl.{name} lacks {option!r}"
    if "max_epochs" in params:
        missing = [option for option in TRAINER_OPTIONS if option not in params]
        assert not missing, f"ss.tl.{name} trains but lacks {missing}"
    for option, default in SHARED_DEFAULTS.items():
        if option in params:
            assert params[option].default == default, f"ss.tl.{name}({option}=...) must default to {default!r}"
    hints = typing.get_type_hints(getattr(ss.tl, name))
    for option in CLOSED_OPTIONS:
        if option in params and option in hints:
            assert _is_literal(hints[option]), f"ss.tl.{name}: {option!r} must be typed Literal[...]"
        elif option in params:
            pytest.fail(f"ss.tl.{name}: {option!r} has no type annotation")


def test_the_walk_covers_every_function():
    """A new function must be run by the dynamic check below."""
    assert set(TL) == set(RUNS), f"add a run for {sorted(set(TL) - set(RUNS))} to RUNS"


# --- dynamic check: one tiny run of each function, then the same run again -----------------------------------


@pytest.fixture(scope="module")
def cells():
    from .tl.test_pretrain import tissue

    return tissue(n=120)


@pytest.fixture(scope="module")
def spots():
    from sslspatial.datasets import synthetic_tissue

    sdata = synthetic_tissue(n_cells=500, n_genes=10, n_sections=2, spot_layouts=("visium",), seed=3)
    ss.pp.build_graph(sdata, table_key="table_visium", method="knn", n_neighs=6)
    return sdata


QUIET = {"enable_progress_bar": False}
TRAIN = {"max_epochs": 1, "batch_size": 32, "train_kwargs": QUIET}
H2E_TINY = {"embed_kernel": 4, "channels": 8, "convmixer_depth": 1, "down_channels": 2, "dim": 16,
            "transformer_depth": 1, "heads": 2, "gnn_depth": 1, "n_pos": 16}  # fmt: skip


def _model(cells):
    return ss.tl.pretrain_mask(cells, mask="entries", key_added="contract_base", overwrite=True, **TRAIN)


def _run(name, cells, spots):
    """Run ``ss.tl.<name>`` once; return (the table holding ``uns[key_added]``, key_added)."""
    key = f"contract_{name}"
    if name == "pretrain_image":
        ss.tl.pretrain_image(spots, table_key="table_visium", patch_px=16, tiles_per_image=64, max_epochs=1,
                             batch_size=32, model_kwargs={"channels": 8, "depth": 1, "down_channels": 2,
                                                          "projector_dim": 16}, key_added=key)  # fmt: skip
        return spots.tables["table_visium"], key
    if name.startswith("pretrain_"):
        kwargs = {"method": "byol"} if name == "pretrain_contrastive" else {}
        getattr(ss.tl, name)(cells, key_added=key, **kwargs, **TRAIN)
        return cells, key
    if name == "annotate":
        ss.tl.annotate(cells, _model(cells), "cell_type", method="expression", key_added=key)
        return cells, key
    if name == "transfer":
        query = cells.copy()
        ss.tl.transfer(query, _model(cells), key_added=key)
        cells.uns["_contract_query"] = query  # keep it for the second run
        return query, key
    if name == "domains":
        ss.tl.domains(cells, n_domains=2, key_added=key)
        return cells, key
    if name == "map_query":
        query = cells.copy()
        ss.tl.map_query(query, _model(cells), "cell_type", key_added=key)
        cells.uns["_contract_query"] = query
        return query, key
    if name == "hist2expr":
        ss.tl.hist2expr(spots, table_key="table_visium", image_key="he", library_key="section", patch_px=16,
                        train_regions=["section_0"], predict_regions=["section_1"], n_validation_sections=0,
                        max_epochs=1, model_kwargs=H2E_TINY, train_kwargs=QUIET, baseline=False, key_added=key)  # fmt: skip
        return spots.tables[key], key
    if name == "superres":
        ss.tl.superres(spots, shapes_key="spots_visium", table_key="table_visium", key_added=key,
                       table_key_added=f"{key}_table", max_epochs=1, n_hidden=8, n_latent=4, batch_size=32,
                       train_kwargs=QUIET)  # fmt: skip
        return spots.tables[f"{key}_table"], key
    raise AssertionError(name)


def _again(name, cells, spots):
    key = f"contract_{name}"
    if name == "transfer":
        return ss.tl.transfer(cells.uns.pop("_contract_query"), _model(cells), key_added=key)
    if name == "map_query":
        return ss.tl.map_query(cells.uns.pop("_contract_query"), _model(cells), "cell_type", key_added=key)
    return _run(name, cells, spots)


RUNS = ("annotate", "domains", "hist2expr", "map_query", "pretrain_contrastive", "pretrain_image", "pretrain_mask",
        "pretrain_pseudolabel", "superres", "transfer")  # fmt: skip


@pytest.mark.parametrize("name", RUNS)
def test_run_record_and_one_error_for_an_existing_output(name, cells, spots):
    table, key = _run(name, cells, spots)
    record = table.uns[key]
    assert record["function"] == name and record["version"] == ss.__version__
    assert isinstance(record["params"], dict) and record["params"]
    assert "data" not in record["params"]
    if RECORD_EXCEPTIONS.get(name, set()) is not None:  # one record builder: every argument but the inputs
        expected = set(_signature(name).parameters) - {"data", "model"} - RECORD_EXCEPTIONS.get(name, set())
        assert set(record["params"]) == expected, (
            f"ss.tl.{name}: the run record misses {expected - set(record['params'])}"
        )
    if "seed" in _signature(name).parameters:
        assert record["params"]["seed"] == 0
    with pytest.raises(ss.OutputExistsError, match="exists already: pass overwrite=True"):
        _again(name, cells, spots)


def test_output_exists_error_is_both_key_and_value_error():
    error = ss.OutputExistsError("obs['x'] exists already: pass overwrite=True or another key_added.")
    assert isinstance(error, KeyError) and isinstance(error, ValueError)
    assert str(error).startswith("obs['x']")  # no KeyError quoting


def test_seed_makes_pretraining_repeatable(cells):
    import random

    import torch

    def disturb(value: int) -> None:  # a different global state before each run: numpy, torch and Python's own
        np.random.seed(value)
        torch.manual_seed(value)
        random.seed(value)

    disturb(1)
    first = ss.tl.pretrain_mask(cells, key_added="seed_a", seed=5, **TRAIN).get_latent_representation()
    disturb(2)
    second = ss.tl.pretrain_mask(cells, key_added="seed_b", seed=5, **TRAIN).get_latent_representation()
    np.testing.assert_allclose(first, second, atol=1e-6)
    other = ss.tl.pretrain_mask(cells, key_added="seed_c", seed=6, **TRAIN).get_latent_representation()
    assert not np.allclose(first, other, atol=1e-4)


def test_accelerator_is_an_argument_not_a_train_kwarg(cells):
    with pytest.raises(TypeError, match="not inside train_kwargs"):
        ss.tl.pretrain_mask(cells, key_added="acc", max_epochs=1, batch_size=32, train_kwargs={"accelerator": "cpu"})
    model = ss.tl.pretrain_mask(cells, key_added="acc", accelerator="cpu", devices=1, **TRAIN)
    assert cells.uns["acc"]["params"]["accelerator"] == "cpu"
    assert model.is_trained_


def test_spatialdata_only_functions_name_the_converter(cells):
    for function in (ss.tl.hist2expr, ss.tl.superres, ss.tl.pretrain_image):
        kwargs = {"shapes_key": "spots"} if function is ss.tl.superres else {}
        with pytest.raises(TypeError, match="from_legacy_anndata"):
            function(cells, **kwargs)


# --- issue 30: the contract gaps ---------------------------------------------------------------------------------

#: Every function that trains a model, some only with an option (``map_query(adapt=True)``, ``annotate`` with a
#: fine-tuned head): each takes the trainer options, whatever it calls its other settings.
TRAINS = ("annotate", "hist2expr", "map_query", "pretrain_contrastive", "pretrain_image", "pretrain_mask",
          "pretrain_pseudolabel", "superres")  # fmt: skip
TRAINER_ARGUMENTS = ("accelerator", "devices", "train_kwargs", "max_epochs")
#: Run records that leave an argument out, and why (anything else records every argument but its inputs).
RECORD_EXCEPTIONS = {
    "annotate": {"train_indices"},  # data, not a setting
    "domains": None,  # records the choices it made (tests/tl/test_domains.py checks defaults stay out)
}


@pytest.mark.parametrize("name", TRAINS)
def test_every_function_that_trains_takes_the_trainer_options(name):
    params = _signature(name).parameters
    missing = [option for option in TRAINER_ARGUMENTS if option not in params]
    assert not missing, f"ss.tl.{name} trains but lacks {missing}"


@pytest.mark.parametrize("name", TL)
def test_key_added_defaults_to_a_name(name):
    default = _signature(name).parameters["key_added"].default
    assert isinstance(default, str) and default, f"ss.tl.{name}(key_added=...) must default to a name, not {default!r}"


def test_hist2expr_checks_its_output_before_loading_anything(spots, tmp_path):
    """The output-exists check comes before any work: here before an image encoder is read from disk."""
    spots.tables["contract_exists"] = spots.tables["table_visium"].copy()
    try:
        with pytest.raises(ss.OutputExistsError, match="exists already"):
            ss.tl.hist2expr(spots, table_key="table_visium", image_key="he", key_added="contract_exists",
                            image_encoder=str(tmp_path / "no_encoder_here"))  # fmt: skip
    finally:
        del spots.tables["contract_exists"]


def test_superres_names_its_outputs_after_its_inputs_by_default(spots):
    defaults = {k: p.default for k, p in _signature("superres").parameters.items()}
    assert defaults["key_added"].format(shapes_key="spots_visium") == "spots_visium_subspots"
    assert defaults["table_key_added"].format(table_key="table_visium") == "table_visium_superres"


def test_map_query_adapts_with_the_trainer_options(cells):
    model = ss.tl.pretrain_pseudolabel(cells, key_added="contract_adapt_ref", **TRAIN)
    query = cells.copy()
    ss.tl.map_query(query, model, "cell_type", adapt=True, max_epochs=2, lr=1e-2, accelerator="cpu", devices=1,
                    train_kwargs={"batch_size": 64}, key_added="adapted")  # fmt: skip
    record = query.uns["adapted"]
    assert record["adaptation"]["epochs"] == 2
    assert record["params"]["accelerator"] == "cpu" and record["params"]["train_kwargs"] == {"batch_size": 64}
    with pytest.raises(TypeError, match="not inside train_kwargs"):
        ss.tl.map_query(cells.copy(), model, "cell_type", adapt=True, train_kwargs={"devices": 1})


def test_data_like_is_public_and_annotates_every_first_argument():
    assert "DataLike" in ss.__all__
    for name in TL:
        first = next(iter(_signature(name).parameters.values()))
        assert first.annotation == "DataLike", f"ss.tl.{name}: annotate `data` with sslspatial.DataLike"


# --- issue 30: seed=None everywhere, and nothing but the documented outputs left in the user's object ------------


def _footprint(obj) -> set[tuple[str, str]]:
    """Every key of an AnnData (obs / var columns, obsm, obsp, uns, layers, varm, varp), or of a SpatialData's
    elements and the keys of its tables (``"<table>.obs"`` ...)."""
    from anndata import AnnData

    if isinstance(obj, AnnData):
        keys = {(axis, str(column)) for axis in ("obs", "var") for column in getattr(obj, axis).columns}
        return keys | {
            (slot, k) for slot in ("obsm", "obsp", "uns", "layers", "varm", "varp") for k in getattr(obj, slot)
        }
    keys = {(kind, name) for kind in ("images", "labels", "points", "shapes", "tables") for name in getattr(obj, kind)}
    return keys | {(f"{name}.{slot}", k) for name, table in obj.tables.items() for slot, k in _footprint(table)}


def _pretrained(cells_or_spots, **kwargs):
    return ss.tl.pretrain_mask(cells_or_spots, mask="entries", key_added="base", **kwargs, **TRAIN)


#: scvi-tools' registry of the table a model is set up on (every scvi-tools model writes it): a pretrained model stays
#: bound to the user's table, so labels and domains added there later travel with ``model.adata`` (and a saved model).
SCVI_REGISTRY = {("uns", "_scvi_uuid"), ("uns", "_scvi_manager_uuid")}
SCVI_REGISTRY_VISIUM = {(f"table_visium.{slot}", key) for slot, key in SCVI_REGISTRY}

#: One cheap run of each function with ``seed=None`` -> the keys it may add (its documented outputs, docs/contract.md).
#: ``"cells"`` runs on a fresh AnnData (the model, where one is needed, pretrained on it first), ``"spots"`` on a fresh
#: SpatialData; a new element's own keys are its content, so only the element is listed.
FRESH_RUNS = {
    "pretrain_mask": ("cells", lambda d: ss.tl.pretrain_mask(d, key_added="k", seed=None, **TRAIN),
                      {("obsm", "X_k"), ("uns", "k"), *SCVI_REGISTRY}),
    "pretrain_mask/spatialdata": ("spots", lambda d: ss.tl.pretrain_mask(d, table_key="table_visium", key_added="k",
                                                                          seed=None, **TRAIN),
                                  {("table_visium.obsm", "X_k"), ("table_visium.uns", "k"), *SCVI_REGISTRY_VISIUM}),
    "pretrain_contrastive": ("cells", lambda d: ss.tl.pretrain_contrastive(d, method="byol", key_added="k", seed=None,
                                                                            **TRAIN),
                             {("obsm", "X_k"), ("uns", "k"), *SCVI_REGISTRY}),
    "pretrain_pseudolabel": ("cells", lambda d: ss.tl.pretrain_pseudolabel(d, key_added="k", seed=None, **TRAIN),
                             {("obsm", "X_k"), ("uns", "k"), *SCVI_REGISTRY}),
    "pretrain_pseudolabel/spatialdata": ("spots", lambda d: ss.tl.pretrain_pseudolabel(
        d, table_key="table_visium", key_added="k", seed=None, **TRAIN),
        {("table_visium.obsm", "X_k"), ("table_visium.uns", "k"), *SCVI_REGISTRY_VISIUM}),
    "pretrain_image": ("spots", lambda d: ss.tl.pretrain_image(
        d, table_key="table_visium", patch_px=16, tiles_per_image=64, max_epochs=1, batch_size=32, seed=None,
        model_kwargs={"channels": 8, "depth": 1, "down_channels": 2, "projector_dim": 16}, key_added="k"),
        {("table_visium.obsm", "X_k"), ("table_visium.uns", "k")}),
    "annotate": ("cells", lambda d: ss.tl.annotate(d, _pretrained(d), "cell_type", method="finetune", max_epochs=1,
                                                   train_kwargs=QUIET, key_added="k", seed=None),
                 {("obs", "k_prediction"), ("obs", "k_train"), ("obsm", "k_probabilities"), ("uns", "k"),
                  ("obsm", "X_base"), ("uns", "base"), *SCVI_REGISTRY}),
    "annotate/spatialdata": ("spots", lambda d: ss.tl.annotate(
        d, _pretrained(d, table_key="table_visium"), "domain", table_key="table_visium", method="finetune",
        max_epochs=1, train_kwargs=QUIET, key_added="k", seed=None),
        {(f"table_visium.{slot}", key) for slot, key in (("obs", "k_prediction"), ("obs", "k_train"),
                                                          ("obsm", "k_probabilities"), ("uns", "k"),
                                                          ("obsm", "X_base"), ("uns", "base"), *SCVI_REGISTRY)}),
    "map_query/spatialdata": ("spots", lambda d: ss.tl.map_query(
        d, _pretrained(d.tables["table_visium"].copy()), "domain", table_key="table_visium", adapt=True,
        max_epochs=1, key_added="k", seed=None),
        {(f"table_visium.{slot}", key) for slot, key in (("obs", "k_prediction"), ("obs", "k_uncertainty"),
                                                          ("obsm", "X_k"), ("obsm", "k_probabilities"),
                                                          ("uns", "k"))}),
    "map_query": ("cells", lambda d: ss.tl.map_query(d, _pretrained(d.copy()), "cell_type", adapt=True, max_epochs=1,
                                                     key_added="k", seed=None),
                  {("obs", "k_prediction"), ("obs", "k_uncertainty"), ("obsm", "X_k"), ("obsm", "k_probabilities"),
                   ("uns", "k")}),
    "domains": ("cells", lambda d: ss.tl.domains(d, n_domains=2, key_added="k", seed=None), {("obs", "k"), ("uns", "k")}),
    "hist2expr": ("spots", lambda d: ss.tl.hist2expr(
        d, table_key="table_visium", image_key="he", library_key="section", patch_px=16, train_regions=["section_0"],
        predict_regions=["section_1"], n_validation_sections=0, max_epochs=1, model_kwargs=H2E_TINY,
        train_kwargs=QUIET, baseline=False, key_added="k", seed=None), {("tables", "k")}),
    "superres": ("spots", lambda d: ss.tl.superres(
        d, shapes_key="spots_visium", table_key="table_visium", key_added="k", table_key_added="k_table",
        max_epochs=1, n_hidden=8, n_latent=4, batch_size=32, train_kwargs=QUIET, seed=None),
        {("shapes", "k"), ("tables", "k_table")}),
}  # fmt: skip


def test_every_seed_parameter_is_run_with_none():
    """A new public function with a ``seed`` must join FRESH_RUNS (which passes ``seed=None``)."""
    with_seed = {
        name
        for module in (ss.tl, ss.pp)
        for name in module.__all__
        if callable(getattr(module, name)) and "seed" in inspect.signature(getattr(module, name)).parameters
    }
    assert with_seed <= {run.split("/")[0] for run in FRESH_RUNS}, sorted(with_seed)


@pytest.mark.parametrize("run", sorted(FRESH_RUNS))
def test_seed_none_and_only_documented_outputs(run):
    from sslspatial.datasets import synthetic_tissue

    from .tl.test_pretrain import tissue

    kind, call, outputs = FRESH_RUNS[run]
    if kind == "cells":
        data = tissue(n=120)
    else:  # as the `spots` fixture, fresh
        data = synthetic_tissue(n_cells=500, n_genes=10, n_sections=2, spot_layouts=("visium",), seed=3)
        ss.pp.build_graph(data, table_key="table_visium", method="knn", n_neighs=6)
    before = _footprint(data)
    call(data)  # seed=None: a fresh seed, no TypeError
    added, removed = _footprint(data) - before, before - _footprint(data)
    new_tables = {name for kind_, name in added if kind_ == "tables"}
    added = {(slot, k) for slot, k in added if slot.split(".")[0] not in new_tables}
    assert not removed, f"{run} removed {sorted(removed)}"
    assert added == outputs, f"{run} left {sorted(added - outputs)} beyond its outputs (missing: {outputs - added})"
