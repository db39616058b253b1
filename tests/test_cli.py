from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from sslspatial.cli import build_parser, main


def _store(path, n=50):
    """A SpatialData zarr store with one table of ``n`` cells and coordinates."""
    import spatialdata as sd
    from spatialdata.models import TableModel

    rng = np.random.default_rng(0)
    table = ad.AnnData(rng.poisson(1, (n, 3)).astype(np.float32), obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]))
    table.obsm["spatial"] = rng.uniform(0, 100, (n, 2))
    sd.SpatialData(tables={"table": TableModel.parse(table)}).write(path)
    return path


def _fails(capsys, argv, code):
    """Run the CLI expecting a failure; return its one-line stderr message."""
    try:
        result = main(argv)
    except SystemExit as exit_info:  # argparse usage errors
        result = exit_info.code
    assert result == code
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err and "\n" not in err, captured.err  # one line, no traceback
    assert "Traceback" not in err
    return err


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("info", "demo", "dataset", "graph", "pretrain", "annotate", "transfer", "domains", "hist2expr",
                    "superres"):  # fmt: skip
        assert command in out


def test_version(capsys):
    import sslspatial

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"sslspatial {sslspatial.__version__}"


def test_missing_store_is_a_one_line_data_error(tmp_path, capsys):
    err = _fails(capsys, ["graph", str(tmp_path / "missing.zarr"), "--method", "knn"], 1)
    assert err.startswith("sslspatial graph: error: no such zarr store") and "missing.zarr" in err


def test_empty_folder_is_a_one_line_data_error(tmp_path, capsys):
    (tmp_path / "empty.zarr").mkdir()
    err = _fails(capsys, ["graph", str(tmp_path / "empty.zarr"), "--method", "knn"], 1)
    assert "is not a SpatialData zarr store" in err


def test_wrong_table_key_names_the_tables(tmp_path, capsys):
    path = _store(tmp_path / "t.zarr")
    err = _fails(capsys, ["graph", str(path), "--method", "knn", "--table-key", "cells"], 1)
    assert err == (f"sslspatial graph: error: no table 'cells' in {str(path)!r} (its tables: 'table'); "
                   "pass --table-key")  # fmt: skip


def test_wrong_option_is_a_one_line_usage_error(capsys):
    err = _fails(capsys, ["graph", "x.zarr", "--no-such-option"], 2)
    assert "unrecognized arguments: --no-such-option" in err and "sslspatial graph --help" in err
    err = _fails(capsys, ["graph", "x.zarr", "--method", "voronoi"], 2)
    assert "invalid choice: 'voronoi'" in err
    _fails(capsys, ["no-such-command"], 2)
    _fails(capsys, ["graph", "x.zarr", "--n-neighs", "six"], 2)


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert main(["graph", str(tmp_path / "missing.zarr"), "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "no such zarr store" in err
    assert main(["--debug", "graph", str(tmp_path / "missing.zarr")]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_unexpected_errors_are_one_line_too(tmp_path, capsys, monkeypatch):
    import sslspatial.cli._graph as graph_cli

    def boom(args):
        raise RuntimeError("something\nbroke")

    monkeypatch.setattr(graph_cli, "run", boom)
    err = _fails(capsys, ["graph", str(tmp_path)], 1)
    assert err == "sslspatial graph: error: RuntimeError: something broke (run with --debug for the traceback)"


def test_every_option_has_help_and_shows_its_default():
    import argparse

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, sub in commands.items():
        for action in sub._actions:
            if action.help == argparse.SUPPRESS:  # hidden deprecated aliases
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help text"
        text = sub.format_help()
        if name == "graph":
            assert "--n-neighs N_NEIGHS" in text and "(default: 6)" in text
    pretrain_help = " ".join(commands["pretrain"].format_help().split())  # help text is wrapped
    assert "(default: 256, 1024 from 100,000 cells)" in pretrain_help


def test_api_option_names_and_deprecated_aliases(capsys):
    parser = build_parser()
    assert parser.parse_args(["pretrain", "x.zarr", "--max-epochs", "3"]).max_epochs == 3
    args = parser.parse_args(["pretrain", "x.zarr", "--epochs", "4", "--save-model", "m"])
    assert args.max_epochs == 4 and args.model_out == "m" and not args.overwrite
    err = capsys.readouterr().err
    assert "--epochs is deprecated, use --max-epochs" in err and "--save-model is deprecated" in err
    assert "--epochs" not in parser._subparsers._group_actions[0].choices["pretrain"].format_help()


def test_pretrain_refuses_to_overwrite_before_training(tmp_path, capsys):
    import spatialdata as sd

    from sslspatial import _io

    path = _store(tmp_path / "t.zarr")
    sdata = sd.read_zarr(path)
    sdata.tables["table"].obsm["X_pretrain_mask"] = np.zeros((50, 2))
    _io.persist(sdata, "table")
    err = _fails(capsys, ["pretrain", str(path)], 1)
    assert "obsm['X_pretrain_mask'] exists already: pass --overwrite" in err
    (tmp_path / "model").mkdir()
    err = _fails(capsys, ["pretrain", str(path), "--key-added", "other", "--model-out", str(tmp_path / "model")], 1)
    assert "--model-out" in err and "exists already" in err


def test_dataset_subcommand_writes_a_store_and_refuses_to_overwrite(tmp_path, capsys):
    import spatialdata as sd

    path = tmp_path / "tissue.zarr"
    argv = ["dataset", "synthetic_tissue", str(path), "--param", "n_cells=200", "--param", "n_genes=5",
            "--param", "spot_layouts=visium,", "--param", "image=False"]  # fmt: skip
    assert main(argv) == 0
    assert "synthetic_tissue written to" in capsys.readouterr().out
    back = sd.read_zarr(path)
    assert back.tables["table"].n_obs == 200 and back.tables["table"].n_vars == 5
    err = _fails(capsys, argv, 1)
    assert "exists already: pass --overwrite" in err
    assert main([*argv[:4], "n_cells=100", *argv[5:], "--overwrite"]) == 0
    assert sd.read_zarr(path).tables["table"].n_obs == 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tissue.zarr"]  # no temporary store left behind
    err = _fails(capsys, ["dataset", "synthetic_tissue", str(tmp_path / "x.zarr"), "--param", "n_cels=10"], 2)
    assert "takes no argument n_cels" in err
    _fails(capsys, ["dataset", "synthetic_tissue", str(tmp_path / "x.zarr"), "--path", str(tmp_path)], 2)
    _fails(capsys, ["dataset", "no_such_reader", str(tmp_path / "x.zarr")], 2)


def test_pipeline_graph_pretrain_domains_transfer_annotate(tmp_path, capsys):
    """A store made by the CLI goes through every step of a pipeline, each persisted to the store."""
    import spatialdata as sd

    path, model = str(tmp_path / "t.zarr"), str(tmp_path / "model")
    assert main(["dataset", "synthetic_tissue", path, "--param", "n_cells=300", "--param", "n_genes=20",
                 "--param", "spot_layouts=[]", "--param", "image=False"]) == 0  # fmt: skip
    assert main(["graph", path, "--method", "knn", "--n-neighs", "5"]) == 0
    assert main(["pretrain", path, "--max-epochs", "1", "--n-hidden", "16", "--n-latent", "8",
                 "--model-out", model]) == 0  # fmt: skip
    assert main(["domains", path, "--method", "gmm", "--n-domains", "3"]) == 0
    assert main(["transfer", path, "--model", model]) == 0
    assert main(["annotate", path, "--model", model, "--labels-key", "cell_type", "--method", "knn"]) == 0
    table = sd.read_zarr(path).tables["table"]
    assert table.obsm["X_pretrain_mask"].shape == (300, 8) and table.obsm["X_transfer"].shape == (300, 8)
    assert table.obs["domains"].nunique() == 3 and "annotate_prediction" in table.obs
    capsys.readouterr()
    err = _fails(capsys, ["domains", path, "--method", "gmm", "--n-domains", "3"], 1)
    assert "obs['domains'] exists already: pass --overwrite" in err
    assert main(["domains", path, "--method", "gmm", "--n-domains", "2", "--overwrite"]) == 0
    assert main(["domains", path, "--use-rep", "X_pretrain_mask", "--n-domains", "3", "--n-hops", "2",
                 "--smooth", "0", "--key-added", "nhood_domains"]) == 0  # fmt: skip
    assert sd.read_zarr(path).tables["table"].obs["nhood_domains"].nunique() == 3


def test_domains_and_annotate_options_default_to_the_api_defaults():
    import inspect

    from sslspatial.cli._domains import DEFAULTS
    from sslspatial.tl import domains

    signature = inspect.signature(domains).parameters
    for name, value in DEFAULTS.items():
        assert signature[name].default == value, name
    args = build_parser().parse_args(["domains", "x.zarr"])
    assert (args.method, args.smooth, args.n_hops, args.autok_range) == ("gmm", 2, 0, (2, 15))
    from sslspatial.cli._pretrain import ANNOTATE_METHODS
    from sslspatial.tl import annotate
    from sslspatial.tl._annotate import METHODS

    assert set(ANNOTATE_METHODS) == set(METHODS)
    method = build_parser().parse_args(["annotate", "x.zarr", "--model", "m", "--labels-key", "y"]).method
    assert method == inspect.signature(annotate).parameters["method"].default
    assert build_parser().parse_args(["domains", "x.zarr", "--autok-range", "3,8"]).autok_range == (3, 8)


def test_info_prints_versions_and_device(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "scvi-tools" in out and "spatialdata" in out
    assert "device" in out and ("cpu" in out or "cuda" in out)


def test_graph_subcommand_writes_in_place_and_refuses_to_overwrite(tmp_path, capsys):
    import spatialdata as sd

    path = _store(tmp_path / "t.zarr")
    assert main(["graph", str(path), "--method", "knn", "--n-neighs", "4"]) == 0
    back = sd.read_zarr(path)
    degree = np.diff(back.tables["table"].obsp["spatial_connectivities"].indptr)
    assert degree.min() >= 4
    err = _fails(capsys, ["graph", str(path), "--method", "knn", "--n-neighs", "6"], 1)
    assert "obsp['spatial_connectivities'] exists already: pass --overwrite" in err
    assert main(["graph", str(path), "--method", "knn", "--n-neighs", "6", "--overwrite"]) == 0
    assert sd.read_zarr(path).tables["table"].uns["spatial_neighbors"]["params"]["n_neighs"] == 6


def test_unknown_method_is_rejected():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["graph", "x.zarr", "--method", "voronoi"])


def test_demo_runs_every_capability_and_beats_the_baselines(tmp_path, capsys):
    """``sslspatial demo`` end to end on a small tissue: outputs written, and each score against the synthetic truth."""
    import json
    from pathlib import Path

    import spatialdata as sd

    assert main(["demo", "--n-cells", "600", "--out", str(tmp_path)]) == 0
    assert "Demo finished" in capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    caps = report["capabilities"]
    assert set(caps) == {"graph", "pretrain", "hist2expr", "superres"}
    assert caps["superres"]["subspot_pearson"] > caps["superres"]["uniform_split_pearson"]
    assert caps["hist2expr"]["mean_pearson_heldout"] > 0
    assert len(report["figures"]) == 4 and all(Path(f).stat().st_size > 0 for f in report["figures"])
    back = sd.read_zarr(tmp_path / "synthetic.zarr")
    assert {"hist2expr", "table_st_superres"} <= set(back.tables)  # predictions and sub-spot profiles persisted
    assert "spots_st_subspots" in back.shapes


def test_hist2expr_subcommand_parses_colour_normalisation():
    assert build_parser().parse_args(["hist2expr", "x.zarr", "--colour-normalize"]).colour_normalize
    assert not build_parser().parse_args(["hist2expr", "x.zarr"]).colour_normalize


def test_hist2expr_subcommand_trains_saves_and_predicts_with_the_saved_model(tmp_path):
    """``--model-out`` then ``--model-in``: the second call trains nothing and reproduces the held-out prediction."""
    import spatialdata as sd

    from sslspatial.datasets import synthetic_tissue

    tissue = synthetic_tissue(n_cells=600, n_genes=8, n_sections=3, spot_layouts=("visium",), seed=2)
    path, model_dir = tmp_path / "t.zarr", tmp_path / "model"
    tissue.write(path)
    common = [str(path), "--table-key", "table_visium", "--image-key", "he", "--library-key", "section"]
    assert main(["hist2expr", *common, "--train-regions", "section_0,section_1", "--predict-regions", "section_2",
                 "--validation-sections", "0", "--max-epochs", "1", "--patch-px", "16",
                 "--model-out", str(model_dir)]) == 0  # fmt: skip
    assert main(["hist2expr", *common, "--model-in", str(model_dir), "--predict-regions", "section_2",
                 "--key-added", "again"]) == 0  # fmt: skip
    back = sd.read_zarr(path)
    first, again = back.tables["hist2expr"], back.tables["again"]
    assert set(again.obs["section"]) == {"section_2"}
    np.testing.assert_allclose(again.X, first[first.obs["section"] == "section_2"].X, atol=1e-5)


def test_exit_codes_of_the_real_process(tmp_path):
    """In a separate process (as a pipeline runs it): exit status and exactly one line on stderr."""
    import subprocess
    import sys

    def run(*argv):
        return subprocess.run([sys.executable, "-m", "sslspatial.cli", *argv], capture_output=True, text=True)

    done = run("graph", str(tmp_path / "missing.zarr"))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "no such zarr store" in done.stderr
    done = run("graph", str(tmp_path), "--bogus")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    done = run("--version")
    assert done.returncode == 0 and done.stdout.startswith("sslspatial ")
