from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from sslspatial.cli import build_parser, main


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("info", "demo", "graph"):
        assert command in out


def test_info_prints_versions_and_device(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "scvi-tools" in out and "spatialdata" in out
    assert "device" in out and ("cpu" in out or "cuda" in out)


def test_graph_subcommand_writes_in_place(tmp_path):
    import spatialdata as sd
    from spatialdata.models import TableModel

    rng = np.random.default_rng(0)
    table = ad.AnnData(rng.poisson(1, (50, 3)).astype(np.float32), obs=pd.DataFrame(index=[f"c{i}" for i in range(50)]))
    table.obsm["spatial"] = rng.uniform(0, 100, (50, 2))
    sdata = sd.SpatialData(tables={"table": TableModel.parse(table)})
    path = tmp_path / "t.zarr"
    sdata.write(path)
    assert main(["graph", str(path), "--method", "knn", "--n-neighs", "4"]) == 0
    back = sd.read_zarr(path)
    degree = np.diff(back.tables["table"].obsp["spatial_connectivities"].indptr)
    assert degree.min() >= 4


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

    from sslspatial.datasets._synthetic import synthetic_tissue

    tissue = synthetic_tissue(n_cells=600, n_genes=8, n_sections=3, spot_layouts=("visium",), seed=2)
    path, model_dir = tmp_path / "t.zarr", tmp_path / "model"
    tissue.write(path)
    common = [str(path), "--table-key", "table_visium", "--image-key", "he", "--section-key", "section"]
    assert main(["hist2expr", *common, "--train-regions", "section_0,section_1", "--predict-regions", "section_2",
                 "--validation-sections", "0", "--max-epochs", "1", "--patch-px", "16",
                 "--model-out", str(model_dir)]) == 0  # fmt: skip
    assert main(["hist2expr", *common, "--model-in", str(model_dir), "--predict-regions", "section_2",
                 "--key-added", "again"]) == 0  # fmt: skip
    back = sd.read_zarr(path)
    first, again = back.tables["hist2expr"], back.tables["again"]
    assert set(again.obs["section"]) == {"section_2"}
    np.testing.assert_allclose(again.X, first[first.obs["section"] == "section_2"].X, atol=1e-5)
