"""The command line a new user meets: usage errors exit 2 with option names and units, `info STORE`, summaries,
the graph warning with a suggested radius, and a demo that will not overwrite a used folder."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from sslspatial.cli import main


def _store(path, n=60, unit="pixel", spacing=10.0):
    """A store with a grid of ``n`` cells ``spacing`` apart, counts, two cell types and a coordinate unit."""
    import spatialdata as sd
    from spatialdata.models import TableModel

    rng = np.random.default_rng(0)
    side = int(np.ceil(np.sqrt(n)))
    xy = np.c_[np.arange(n) % side, np.arange(n) // side].astype(float) * spacing
    table = ad.AnnData(
        rng.poisson(2, (n, 5)).astype(np.float32),
        obs=pd.DataFrame(
            {"cell_type": pd.Categorical(rng.choice(["eL2/3", "Astro"], n))}, index=[f"c{i}" for i in range(n)]
        ),
    )
    table.obsm["spatial"] = xy
    table.uns["starmap_like"] = {"coordinate_unit": unit}
    sd.SpatialData(tables={"table": TableModel.parse(table)}).write(path)
    return str(path)


def _usage_error(capsys, argv) -> str:
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.count("\n") == 0 and "Traceback" not in err and "ValueError" not in err
    return err


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (
            ["graph", "{store}"],
            [
                "--radius is needed",
                "Pass e.g. --radius 15",
                "pixels",
                "median nearest-neighbour distance is 10",
                "and --radius 15 gives about 6 neighbours",
            ],
        ),
        (["graph", "{store}", "--radius", "-5"], ["--radius -5.0: --radius must be a number > 0"]),
        (
            ["graph", "{store}", "--method", "knn", "--n-neighs", "0"],
            ["--n-neighs 0: --n-neighs must be an integer >= 1"],
        ),
        (["domains", "{store}", "--n-domains", "0"], ["--n-domains 0"]),
        (["domains", "{store}", "--autok-range", "5,2"], ["--autok-range 5,2", "Pass e.g. --autok-range 2,5"]),
        (
            ["pretrain", "{store}", "--encoder", "mlp", "--mask", "entries", "--max-epochs", "-1"],
            ["--max-epochs -1: --max-epochs must be an integer >= 1 (or left out for the default)"],
        ),
        (["pretrain", "{store}", "--encoder", "mlp", "--mask", "entries", "--n-latent", "0"], ["--n-latent 0"]),
        (
            ["pretrain", "{store}", "--encoder", "mlp", "--mask", "entries", "--lr", "-1"],
            ["--lr -1.0: --lr must be a number > 0"],
        ),
        (
            ["pretrain", "{store}", "--encoder", "mlp", "--mask", "entries", "--accelerator", "cpu", "--devices", "2"],
            ["--devices 2"],
        ),
        (
            ["pretrain", "{store}", "--encoder", "mlp", "--mask", "entries", "--seed", "-1"],
            ["--seed -1: --seed must be a non-negative integer", "Pass e.g. --seed 0"],
        ),
        (
            ["domains", "{store}", "--n-domains", "500", "--smooth", "0"],
            [
                "--n-domains 500: --n-domains must be at most 12 on 60 cells",
                "Pass e.g. --n-domains 12",
                "no --n-domains",
            ],
        ),
        (
            ["dataset", "starmap_mpfc", "{store}.new"],
            ["--path is needed: a local folder with the STARmap files", "Pass e.g. --path data/starmap_mpfc"],
        ),
    ],
)
def test_usage_errors_exit_2_with_option_names(tmp_path, capsys, argv, needles):
    store = _store(tmp_path / "s.zarr")
    err = _usage_error(capsys, [a.format(store=store) for a in argv])
    for needle in needles:
        assert needle in err, err
    assert "radius=" not in err and "n_neighs=" not in err and "path=" not in err  # no Python spelling of options
    assert "None" not in err  # not something to type


def test_cli_seed_reaches_the_function(tmp_path, capsys):
    """``pretrain --seed`` used to set scvi's global seed, which the function's own ``seed=0`` then replaced."""
    store = _store(tmp_path / "s.zarr")
    argv = ["pretrain", store, "--encoder", "mlp", "--mask", "entries", "--n-hidden", "8", "--n-latent", "2",
            "--max-epochs", "1", "--seed", "5"]  # fmt: skip
    assert main(argv) == 0
    import spatialdata as sd

    assert sd.read_zarr(store).tables["table"].uns["pretrain_mask"]["params"]["seed"] == 5


def test_a_missing_dataset_folder_says_to_leave_out_path(tmp_path, capsys):
    argv = ["dataset", "starmap_mpfc", str(tmp_path / "t.zarr"), "--path", str(tmp_path / "nowhere")]
    assert main(argv) == 1  # a data error, like a missing store
    err = capsys.readouterr().err
    assert "is not a folder" in err and "or no --path to download them" in err and "--path None" not in err


def test_library_hints_are_rewritten_as_options(tmp_path, capsys):
    store = _store(tmp_path / "s.zarr")
    assert main(["graph", store, "--method", "knn", "--n-neighs", "4"]) == 0
    capsys.readouterr()
    assert main(["graph", store, "--method", "knn", "--n-neighs", "4"]) == 1
    err = capsys.readouterr().err
    assert "pass --overwrite" in err and "overwrite=True" not in err


def test_graph_warns_and_suggests_a_radius_when_cells_are_isolated(tmp_path, capsys):
    store = _store(tmp_path / "s.zarr", n=100)
    assert main(["graph", store, "--radius", "5"]) == 0
    captured = capsys.readouterr()
    assert "100 of 100 cells (100%) have no neighbour within --radius 5" in captured.err
    assert "median nearest-neighbour distance is 10 pixels" in captured.err and "--radius 1" in captured.err
    assert "100 of 100 cells without a neighbour" in captured.out
    assert main(["graph", store, "--radius", "15", "--overwrite"]) == 0
    assert "have no neighbour" not in capsys.readouterr().err


def test_info_store_lists_tables_columns_embeddings_graphs_and_runs(tmp_path, capsys):
    store = _store(tmp_path / "s.zarr", n=100)
    assert main(["graph", store, "--method", "knn", "--n-neighs", "4"]) == 0
    assert main(["domains", store, "--n-domains", "2", "--smooth", "0"]) == 0
    capsys.readouterr()
    assert main(["info", store]) == 0
    out = capsys.readouterr().out
    assert "table 'table': 100 observations x 5 variables" in out
    assert "cell_type (2 categories: Astro, eL2/3)" in out and "domains (2 categories" in out
    assert "obsp['spatial_connectivities']: mean degree" in out and "0 isolated cells (0.0%)" in out
    assert "spatial (100, 2) (pixels)" in out
    assert "uns['domains']: domains (sslspatial" in out and "n_domains=2" in out
    assert main(["info"]) == 0 and "python" in capsys.readouterr().out  # without a store: versions, as before


def test_dataset_prints_the_columns_a_user_needs(tmp_path, capsys):
    argv = ["dataset", "synthetic_tissue", str(tmp_path / "t.zarr"), "--param", "n_cells=200", "--param",
            "n_genes=5", "--param", "spot_layouts=[]", "--param", "image=False"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "table 'table': 200 observations x 5 variables; coordinates obsm['spatial'] in µm" in out
    assert "obs columns: " in out and "cell_type (" in out and "domain (" in out


def test_domains_prints_one_summary_line(tmp_path, capsys):
    store = _store(tmp_path / "s.zarr", n=100)
    assert main(["domains", store, "--smooth", "0", "--autok-range", "2,3", "--autok-runs", "2"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("domains: ") and "chosen by AutoK stability over (2, 3)" in out[0]


def test_demo_refuses_a_used_folder_without_overwrite(tmp_path, capsys):
    from sslspatial.cli._demo import DEMO_OUTPUTS, prepare_folder

    (tmp_path / "report.json").write_text("{}")
    (tmp_path / "pretrain.png").write_bytes(b"old")
    (tmp_path / "mine.txt").write_text("a user's file")
    assert main(["demo", "--out", str(tmp_path), "--only", "superres"]) == 1
    assert "holds files already" in capsys.readouterr().err and "--overwrite" in capsys.readouterr().err + "--overwrite"
    assert (tmp_path / "pretrain.png").read_bytes() == b"old"
    prepare_folder(tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]  # only the demo's own outputs went
    assert "report.md" in DEMO_OUTPUTS
    prepare_folder(tmp_path / "new", overwrite=False)  # a new folder is fine


def test_info_shows_run_records_with_lists_of_names(tmp_path, capsys):
    """A run record's list of names (annotate's candidates, read back from zarr as a string array) broke `info`."""
    import spatialdata as sd

    store = _store(tmp_path / "s.zarr")
    sdata = sd.read_zarr(store)
    sdata.tables["table"].uns["annotate"] = {
        "function": "annotate",
        "version": "0",
        "params": {"candidates": ["linear", "knn"], "radius": [5.0, 20.5]},
        "chosen": "linear",
    }
    import sslspatial as ss

    ss.io.persist(sdata, "table")
    capsys.readouterr()
    assert main(["info", store]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "uns['annotate']" in x)  # zarr does not keep the key order
    assert "annotate (sslspatial 0); chose linear; " in line
    assert "candidates=linear,knn" in line and "radius=5,20.5" in line


def test_demo_checks_its_numbers_before_touching_the_folder(tmp_path, capsys):
    (tmp_path / "report.json").write_text("{}")
    err = _usage_error(capsys, ["demo", "--out", str(tmp_path), "--n-cells", "0", "--overwrite"])
    assert "--n-cells 0: --n-cells must be an integer >= 1" in err
    assert (tmp_path / "report.json").exists()  # a refused run deletes nothing
    assert "--seed -2" in _usage_error(capsys, ["demo", "--out", str(tmp_path / "new"), "--seed", "-2"])
