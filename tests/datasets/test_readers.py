"""Readers of the real public datasets, checked against the raw files in ../shared/data (no downloads)."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sslspatial import _io
from sslspatial.datasets import (
    _readers_common,
    cite_seq_skin,
    cosmx_lung_mini,
    her2st,
    osmfish,
    starmap_mpfc,
    visium_dg_mini,
)


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch):
    """Any attempt to download fails the test."""
    import pooch

    def refuse(*args, **kwargs):
        raise AssertionError(f"a test tried to download {args[:1]}")

    monkeypatch.setattr(pooch, "retrieve", refuse)


def _dense(x) -> np.ndarray:
    return np.asarray(x.todense() if hasattr(x, "todense") else x)


def _affine(element, cs: str) -> np.ndarray:
    from spatialdata.transformations import get_transformation

    return np.asarray(get_transformation(element, cs).to_affine_matrix(("x", "y"), ("x", "y")), dtype=float)


def _to_pixels(element, cs: str, xy: np.ndarray) -> np.ndarray:
    inv = np.linalg.inv(_affine(element, cs))
    return (np.c_[xy, np.ones(len(xy))] @ inv.T)[:, :2]


# --------------------------------------------------------------------------------------------------- her2st


@pytest.fixture(scope="module")
def her2st_c2(shared_data):
    return her2st(["C2"], path=shared_data / "her2st", image_downscale=4)


def test_her2st_spots_sit_on_tissue(her2st_c2):
    img = her2st_c2["C2_image"]
    assert img.dtype == np.uint8 and img.dims == ("c", "y", "x")
    assert img.shape == (3, -(-9911 // 4), -(-9274 // 4))  # full image is 9274 wide x 9911 tall
    np.testing.assert_allclose(_affine(img, "C2")[:2, :2], 4 * np.eye(2))
    gray = np.asarray(img.data).mean(axis=0)
    table = her2st_c2["table"]
    cols, rows = np.floor(_to_pixels(img, "C2", table.obsm["spatial"])).astype(int).T
    under_spots = np.mean([gray[r - 5 : r + 6, c - 5 : c + 6].mean() for r, c in zip(rows, cols, strict=True)])
    background = gray[gray >= np.percentile(gray, 90)].mean()
    corners = np.mean([gray[:200, :200].mean(), gray[-200:, -200:].mean(), gray[:200, -200:].mean()])
    assert under_spots < 0.75 * background
    assert under_spots < corners - 50


def test_her2st_counts_equal_raw_tsv(her2st_c2, shared_data):
    table = her2st_c2["table"]
    raw = pd.read_csv(shared_data / "her2st/counts/C2.tsv.gz", sep="\t", index_col=0)
    assert table.shape == (187, raw.shape[1])
    assert table.X.dtype == np.float32 and table.X.format == "csr"
    assert _dense(table[["C2_10x21"], ["ISG15"]].X)[0, 0] == raw.loc["10x21", "ISG15"] == 1
    rng = np.random.default_rng(0)
    nz_rows, nz_cols = np.nonzero(raw.to_numpy())
    pick = rng.choice(len(nz_rows), 200, replace=False)
    spots = [f"C2_{raw.index[i]}" for i in nz_rows[pick]]
    genes = raw.columns[nz_cols[pick]]
    got = np.array(
        [table.X[table.obs_names.get_loc(s), table.var_names.get_loc(g)] for s, g in zip(spots, genes, strict=True)]
    )
    np.testing.assert_array_equal(got, raw.to_numpy()[nz_rows[pick], nz_cols[pick]])
    assert table.X.sum() == raw.to_numpy().sum()


def test_her2st_geometry_and_annotation(her2st_c2, shared_data):
    from spatialdata.models import get_table_keys

    table = her2st_c2["table"]
    sel = pd.read_csv(shared_data / "her2st/spots/C2_selection.tsv", sep="\t").set_index(["x", "y"])
    first = table.obs.loc["C2_25x13"]
    assert (first["array_x"], first["array_y"]) == (25, 13)
    np.testing.assert_allclose(
        table.obsm["spatial"][table.obs_names.get_loc("C2_25x13")], sel.loc[(25, 13), ["pixel_x", "pixel_y"]]
    )
    assert get_table_keys(table) == (["C2_spots"], "region", "spot_id")
    shapes = her2st_c2["C2_spots"]
    assert list(shapes.index) == list(table.obs["spot_id"])
    np.testing.assert_allclose(np.c_[shapes.geometry.x, shapes.geometry.y], table.obsm["spatial"])
    # 50 µm radius = a quarter of the 200 µm array pitch, about 290 px per step here
    assert shapes["radius"].iloc[0] == pytest.approx(table.uns["her2st"]["pixels_per_array_step"]["C2"] / 4)
    assert 71 < shapes["radius"].iloc[0] < 74
    assert table.obs["label"].isna().all()  # C2 has no pathologist labels
    assert list(table.obs["section"].cat.categories) == ["C2"]


def test_her2st_labels_join_on_rounded_array_coordinates(shared_data):
    sdata = her2st(["C1", "B1"], path=shared_data / "her2st", genes=["ERBB2", "GAPDH"])
    table = sdata["table"]
    assert not sdata.images  # B1 and C1 have no H&E image
    assert set(sdata.shapes) == {"C1_spots", "B1_spots"}
    assert table.obs_names.is_unique and list(table.var_names) == ["ERBB2", "GAPDH"]
    # rows of labels/C1_labeled_coordinates.tsv: x=9.79, y=19.966 -> spot 10x20; x=9.008, y=17.012 -> spot 9x17
    assert table.obs.loc["C1_10x20", "label"] == "invasive cancer"
    assert table.obs.loc["C1_9x17", "label"] == "connective tissue"
    per_section = table.obs.groupby("section", observed=True)["label"].count()
    assert per_section.to_dict() == {"C1": 176, "B1": 295}  # C1's file has 177 rows, one spot has no counts
    raw = pd.read_csv(shared_data / "her2st/counts/B1.tsv.gz", sep="\t", index_col=0, usecols=["Unnamed: 0", "ERBB2"])
    np.testing.assert_array_equal(
        _dense(table[table.obs["section"] == "B1", "ERBB2"].X).ravel(),
        raw.loc[table.obs.loc[table.obs["section"] == "B1", "spot_id"].str[3:], "ERBB2"],
    )


def test_her2st_hvg_order_and_union_zero_fill(shared_data):
    root = shared_data / "her2st"
    hvg = her2st(["C2"], path=root, genes="hvg", load_images=False)
    assert list(hvg["table"].var_names) == list(np.load(root / "genes/her_hvg_cut_1000.npy"))
    assert hvg["table"].n_vars == 785

    def header(s):
        with gzip.open(root / f"counts/{s}.tsv.gz", "rt") as f:
            return f.readline().rstrip("\n").split("\t")[1:]

    only_c3 = sorted(set(header("C3")) - set(header("C2")))[:3]
    both = her2st(["C2", "C3"], path=root, genes="all", load_images=False)["table"]
    assert both.n_vars == len(set(header("C2")) | set(header("C3")))
    c2 = both[both.obs["section"] == "C2", only_c3]
    c3 = both[both.obs["section"] == "C3", only_c3]
    assert _dense(c2.X).sum() == 0 and _dense(c3.X).sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"sections": ["Z9"]}, ValueError, "Z9"),
        ({"sections": ["C2"], "image_downscale": 0}, ValueError, "image_downscale"),
        ({"sections": ["C2"], "genes": "highly_variable"}, ValueError, "genes"),
        ({"sections": ["C2", "C2"]}, ValueError, "duplicates"),
    ],
)
def test_her2st_bad_arguments_fail_before_reading(shared_data, kwargs, error, match):
    with pytest.raises(error, match=match):
        her2st(path=shared_data / "her2st", **kwargs)


def test_her2st_unknown_gene_and_missing_folder(shared_data, tmp_path):
    with pytest.raises(KeyError, match="NOT_A_GENE"):
        her2st(["C2"], path=shared_data / "her2st", genes=["NOT_A_GENE"], load_images=False)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        her2st(["C2"], path=tmp_path / "nowhere")


# --------------------------------------------------------------------------------------------------- cells


def test_osmfish_matches_loom(shared_data):
    import h5py

    sdata = osmfish(path=shared_data / "osmfish")
    adata = sdata.tables["table"]
    assert adata.shape == (4839, 33)
    # a SpatialData: the table annotates one point per cell, in micrometres (coordinate system "global")
    assert list(sdata.points) == ["cells"] and set(adata.obs["region"]) == {"cells"}
    np.testing.assert_allclose(_io.get_coordinates(sdata, coordinate_system="global"), adata.obsm["spatial"])
    assert adata.obs["cell_type"].nunique() == 31 and adata.obs["anatomical_region"].nunique() == 11
    assert list(adata.obs["section"].cat.categories) == ["osmFISH_SScortex"]
    with h5py.File(shared_data / "osmfish/osmFISH_SScortex_mouse_all_cells.loom", "r") as f:
        genes = [g.decode() for g in f["row_attrs/Gene"][:]]
        ids = [c.decode() for c in f["col_attrs/CellID"][:]]
        j = ids.index("778")
        gad2 = f["matrix"][genes.index("Gad2"), j]
        x, y = f["col_attrs/X"][j], f["col_attrs/Y"][j]
        total = f["matrix"][:, f["col_attrs/Valid"][:] == 1].sum()
    assert gad2 == 35 and adata[["778"], ["Gad2"]].X[0, 0] == gad2
    np.testing.assert_allclose(adata.obsm["spatial"][adata.obs_names.get_loc("778")], [x * 0.065, y * 0.065])
    assert adata.X.sum() == total == 898_778
    assert adata.obs.loc["778", "cell_type"] == "Inhibitory CP"
    assert osmfish(path=shared_data / "osmfish", valid_only=False).tables["table"].n_obs == 6471


def test_starmap_sections_aligned_by_gene(shared_data):
    root = shared_data / "starmap_mpfc"
    sdata = starmap_mpfc(path=root)
    adata = sdata.tables["table"]
    assert adata.obs["section"].value_counts().to_dict() == {"BZ9": 1053, "BZ5": 1049}
    # one points element and coordinate system per section (their pixel frames are unrelated)
    assert sorted(sdata.points) == ["BZ5_cells", "BZ9_cells"]
    bz9_rows = np.flatnonzero(adata.obs["section"] == "BZ9")
    np.testing.assert_allclose(
        _io.get_coordinates(sdata, coordinate_system="BZ9", rows=bz9_rows), adata.obsm["spatial"][bz9_rows]
    )
    assert adata.n_vars == 166 and adata.obs["cell_type"].nunique() == 15
    assert list(adata.obs["layer"].cat.categories) == ["1", "2", "3", "4"]
    # first row of the BZ5 files: cell 69x4486, Smc, layer 1, Arx = 13
    assert adata[["BZ5_69x4486"], ["Arx"]].X[0, 0] == 13
    assert adata.obs.loc["BZ5_69x4486", ["cell_type", "layer"]].tolist() == ["Smc", "1"]
    np.testing.assert_allclose(adata.obsm["spatial"][0], [68.8637444369932, 4486.02889715296])
    raw9 = pd.read_csv(root / "20180419_BZ9_control_counts_cells_x_genes.csv.gz", index_col=0)
    bz9 = adata[adata.obs["section"] == "BZ9"]
    np.testing.assert_array_equal(bz9[:, raw9.columns].X, raw9.to_numpy())
    assert starmap_mpfc(sections=["20180419_BZ9_control"], path=root).tables["table"].n_obs == 1053
    assert adata.uns["starmap_mpfc"]["coordinate_unit"] == "pixel"


def test_starmap_errors():
    with pytest.raises(
        ValueError, match=r"path is needed: a local folder with the STARmap files.*path='data/starmap_mpfc'"
    ):
        starmap_mpfc()
    with pytest.raises(ValueError, match="BZ7"):
        starmap_mpfc(sections=["BZ7"], path=".")


def test_visium_dg_locations_follow_expression_columns(shared_data):
    from sklearn.neighbors import NearestNeighbors

    sdata = visium_dg_mini(path=shared_data / "visium_dg_mini")
    adata = sdata.tables["table"]
    assert adata.shape == (624, 634)
    # spot circles and the H&E canvas in full-resolution pixels: the image's transformation puts the spots on it
    assert len(sdata.shapes["spots"]) == 624
    assert sdata.shapes["spots"]["radius"].iloc[0] == pytest.approx(89.44476048022638 / 2)
    image = _io.get_image(sdata, "he", "global")
    lowres = adata.uns["spatial"]["visium_dg"]["scalefactors"]["tissue_lowres_scalef"]
    np.testing.assert_allclose(image.to_pixels(adata.obsm["spatial"]), adata.obsm["spatial"] * lowres)
    assert adata[["AAAGGGATGTAGCAAG-1"], ["Gna12"]].X[0, 0] == 1  # first value of visium_DG_expr.txt.gz
    np.testing.assert_array_equal(adata.obsm["spatial"][0], [5477, 4125])
    # spatially coherent expression only if locations are joined in the expression's column order
    xy = adata.obsm["spatial"]
    idx = NearestNeighbors(n_neighbors=7).fit(xy).kneighbors(xy, return_distance=False)[:, 1:]
    logx = np.log1p(_dense(adata.X))
    top = np.argsort(-logx.var(0))[:50]

    def moran(v):
        v = v - v.mean()
        return (v[:, None] * v[idx]).mean() / (v**2).mean()

    assert np.mean([moran(logx[:, g]) for g in top]) > 0.3
    shuffled = logx[np.random.default_rng(0).permutation(len(logx))]
    assert abs(np.mean([moran(shuffled[:, g]) for g in top])) < 0.1
    library = adata.uns["spatial"]["visium_dg"]
    assert library["scalefactors"]["spot_diameter_fullres"] == pytest.approx(89.44476048022638)
    canvas = library["images"]["lowres"]
    pixels = xy * library["scalefactors"]["tissue_lowres_scalef"]
    assert canvas.dtype == np.uint8 and (pixels.max(0) < canvas.shape[1::-1]).all()
    assert (canvas[: int(pixels[:, 1].min()) - 20] == 255).all()  # blank above the crop, tissue under the spots


# --------------------------------------------------------------------------------------------------- multimodal


def test_cite_seq_skin_tables_and_grids(shared_data):
    from spatialdata.models import get_table_keys

    sdata = cite_seq_skin(path=shared_data / "cite_seq_skin")
    protein, rna = sdata["protein"], sdata["rna"]
    assert protein.shape == (1618, 283) and rna.shape == (1618, 10)
    # second row of the raw files: spot 20x14 has CD34 = 6 ADT counts and RNA18S5 = 2 UMIs
    assert protein[["20x14"], ["CD34.GCAGAAATCTCCCTT"]].X[0, 0] == 6
    assert rna[["20x14"], ["RNA18S5"]].X[0, 0] == 2
    np.testing.assert_array_equal(protein.obsm["spatial"][protein.obs_names.get_loc("20x14")], [14, 20])
    assert protein.obs["is_center"].sum() == 336
    for table in (protein, rna):
        assert get_table_keys(table) == ("spots", "region", "spot_id")
        assert list(table.obs["spot_id"]) == list(sdata["spots"].index)
    spots, subs = sdata["spots"], sdata["subspots"]
    np.testing.assert_allclose(spots.area, 1.0)
    assert len(subs) == 9 * 1618
    np.testing.assert_allclose(subs.area.groupby(subs["spot_id"]).sum().loc[spots.index], 1.0)
    centre = subs[subs["k"] == 4].set_index("spot_id").loc[spots.index].geometry.centroid
    np.testing.assert_allclose(np.c_[centre.x, centre.y], protein.obsm["spatial"])
    assert subs.geometry.union_all().difference(spots.geometry.union_all()).area < 1e-9


def test_cosmx_transcripts_land_in_their_cells(shared_data):
    sdata = cosmx_lung_mini(path=shared_data / "cosmx_lung_mini")
    tx = sdata["transcripts"].compute()
    table = sdata["table"]
    assert len(tx) == 25_825
    assigned = tx[tx["cell_id"] > 0]
    assert table.X.sum() + table.obs["negprobe_counts"].sum() == len(assigned)
    assert table.n_obs == 67 + 53 and table.n_vars == 960 and not table.var_names.str.startswith("NegPrb").any()
    for fov in (2, 3):
        labels = sdata[f"fov{fov}_labels"]
        mask = np.asarray(labels.data)
        sub = tx[tx["fov"] == fov]
        cols, rows = np.floor(_to_pixels(labels, "global", sub[["x", "y"]].to_numpy())).astype(int).T
        under = mask[rows.clip(0, mask.shape[0] - 1), cols.clip(0, mask.shape[1] - 1)]
        is_assigned = sub["cell_id"].to_numpy() > 0
        assert (under[is_assigned] == sub["cell_id"].to_numpy()[is_assigned]).mean() > 0.97
        assert (under[~is_assigned] == 0).mean() > 0.97
        cells = table[table.obs["fov"] == fov]
        assert set(cells.obs["cell_id"]) == set(np.unique(mask)) - {0}
        np.testing.assert_allclose(_affine(sdata[f"fov{fov}_image"], "global"), _affine(labels, "global"))
    # one cell by hand: counts of its transcripts per gene
    row = table.obs.iloc[0]
    mine = assigned[(assigned["fov"] == row["fov"]) & (assigned["cell_id"] == row["cell_id"])]
    expected = mine[~mine["gene"].astype(str).str.startswith("NegPrb")]["gene"].astype(str).value_counts()
    got = pd.Series(_dense(table.X[0]).ravel(), index=table.var_names)
    assert got[got > 0].sort_index().to_dict() == expected.sort_index().astype(np.float32).to_dict()
    np.testing.assert_allclose(table.obsm["spatial"][0], mine[["x", "y"]].mean().to_numpy())


# --------------------------------------------------------------------------------------------------- download path


def test_download_branch_uses_pinned_sources(shared_data, tmp_path, monkeypatch):
    """path=None goes through pooch with commit-pinned URLs or checksums; served here from the shared copies."""
    import pooch

    local = {
        "osmFISH_SScortex_mouse_all_cells.loom": shared_data / "osmfish/osmFISH_SScortex_mouse_all_cells.loom",
        "Lung12_tx_file.csv": shared_data / "cosmx_lung_mini/Lung12_tx_file.csv",
    }
    seen = []

    def serve(url, known_hash, fname, path, progressbar):
        seen.append((url, known_hash))
        if url.startswith("https://raw.githubusercontent.com/"):
            assert len(url.split("/")[5]) == 40  # pinned to a commit
        source = local.get(fname) or next(
            p for d in ("cosmx_lung_mini", "her2st") for p in (shared_data / d).rglob(fname)
        )
        if known_hash is not None:
            assert hashlib.sha256(source.read_bytes()).hexdigest() == known_hash
        Path(path).mkdir(parents=True, exist_ok=True)
        shutil.copy(source, Path(path) / fname)
        return str(Path(path) / fname)

    monkeypatch.setattr(pooch, "retrieve", serve)
    monkeypatch.setattr(pooch, "os_cache", lambda name: tmp_path / name)
    assert osmfish().tables["table"].shape == (4839, 33)
    assert cosmx_lung_mini()["table"].n_obs == 120
    assert seen[0] == (
        "https://linnarssonlab.org/osmFISH/osmFISH_SScortex_mouse_all_cells.loom",
        "6153b56b300280e0cbd2eb45377eea4a5e85606bed739c96eb02feee5f53bc63",
    )
    assert all("drieslab/GiottoData/1dc55ee8" in url for url, _ in seen[1:])
    assert (tmp_path / "sslspatial/cosmx_lung_mini/CellLabels/CellLabels_F002.tif").is_file()
    n_before = len(seen)
    table = her2st(["C1"], load_images=False)["table"]
    assert table.obs["label"].count() == 176
    assert {url.rsplit("/", 2)[-2] for url, _ in seen[n_before:]} == {"ST-cnts", "ST-spotfiles", "lbl"}
    assert _readers_common.cache_dir("her2st") == tmp_path / "sslspatial/her2st"
