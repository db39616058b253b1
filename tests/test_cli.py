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
