"""Reader of the HER2-positive breast tumour legacy-ST data (Andersson et al., 2021) as one SpatialData."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from scipy import sparse

from ._readers_common import Remote, check_path, fetch, github_raw, read_rgb

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

_REPO, _COMMIT = "almaan/her2st", "85df7411b987a7dec3feff9718b869a7a82091ec"
_HVG_URL = github_raw("maxpmx/HisToGene", "44ff75b9b68949796f27f1b4121d36ea4cba8bf3", "data/her_hvg_cut_1000.npy")
_HVG_SHA256 = "c3492478d462c72796a2f9603302af8e0b34cb884cd55cbd864c193001c9402b"
_HVG_FILE = "genes/her_hvg_cut_1000.npy"
#: every section of the upstream repository
SECTIONS: tuple[str, ...] = tuple(
    f"{p}{i}"
    for p, n in [("A", 6), ("B", 6), ("C", 6), ("D", 6), ("E", 3), ("F", 3), ("G", 3), ("H", 3)]
    for i in range(1, n + 1)
)
#: sections whose H&E image is downloaded (spot pixel coordinates verified to fall on the tissue)
IMAGED: tuple[str, ...] = ("B4", "C2", "C3", "C4", "C5")
_IMAGE_FILES = {
    "B4": "B/B4/BT10737_D2_HE.jpg",
    "C2": "C/C2/5714_HE_BT_C2.jpg",
    "C3": "C/C3/5714_HE_BT_D1.jpg",
    "C4": "C/C4/5714_HE_BT_D2.jpg",
    "C5": "C/C5/5714_HE_BT_E1.jpg",
}
_LABELLED = ("A1", "B1", "C1", "D1", "E1", "F1", "G2", "H1")
SPOT_DIAMETER_UM = 100.0
ARRAY_PITCH_UM = 200.0


def _files(section: str) -> tuple[dict[str, Remote], dict[str, Remote | None]]:
    required = {
        f"counts/{section}.tsv.gz": Remote(github_raw(_REPO, _COMMIT, f"data/ST-cnts/{section}.tsv.gz")),
        f"spots/{section}_selection.tsv": Remote(
            github_raw(_REPO, _COMMIT, f"data/ST-spotfiles/{section}_selection.tsv")
        ),
    }
    optional: dict[str, Remote | None] = {
        f"images/{section}.jpg": None,
        f"labels/{section}_labeled_coordinates.tsv": None,
    }
    if section in _IMAGE_FILES:
        optional[f"images/{section}.jpg"] = Remote(github_raw(_REPO, _COMMIT, f"data/ST-imgs/{_IMAGE_FILES[section]}"))
    if section in _LABELLED:
        url = github_raw(_REPO, _COMMIT, f"data/ST-pat/lbl/{section}_labeled_coordinates.tsv")
        optional[f"labels/{section}_labeled_coordinates.tsv"] = Remote(url)
    return required, optional


def _check_args(
    sections: Sequence[str] | None, path: Path | None, genes: object, image_downscale: int
) -> tuple[list[str], str | list[str]]:
    if sections is None:
        sections = list(IMAGED)
    elif isinstance(sections, str):
        sections = [sections]
    sections = [str(s) for s in sections]
    if not sections:
        raise ValueError("sections is empty: pass section names such as ['C2'] or None for the five imaged sections.")
    if len(set(sections)) != len(sections):
        raise ValueError(f"sections has duplicates: {sections}.")
    if path is None:
        unknown = [s for s in sections if s not in SECTIONS]
        if unknown:
            raise ValueError(f"Unknown her2st section(s) {unknown}; available: {', '.join(SECTIONS)}.")
    else:
        available = sorted(p.name.removesuffix(".tsv.gz") for p in (path / "counts").glob("*.tsv.gz"))
        unknown = [s for s in sections if s not in available]
        if unknown:
            raise ValueError(
                f"Section(s) {unknown} have no counts/<section>.tsv.gz under {str(path)!r}; available: {available}."
            )
    if isinstance(genes, str):
        if genes not in ("all", "hvg"):
            raise ValueError(f"genes={genes!r}: use 'all', 'hvg' or a list of gene symbols.")
        gene_choice: str | list[str] = genes
    else:
        gene_choice = [str(g) for g in genes]  # type: ignore[union-attr]
        if not gene_choice:
            raise ValueError("genes is an empty list: pass 'all', 'hvg' or at least one gene symbol.")
    if isinstance(image_downscale, bool) or not isinstance(image_downscale, int | np.integer) or image_downscale < 1:
        raise ValueError(f"image_downscale must be a positive integer, got {image_downscale!r}.")
    return sections, gene_choice


def _read_section(root: Path, section: str) -> tuple[pd.DataFrame, sparse.csr_matrix, list[str], float]:
    """Return spot metadata, raw counts (csr, float32) and gene symbols of one section, and its pixels per array step."""
    counts = _read_counts(root / f"counts/{section}.tsv.gz")
    spots = pd.read_csv(root / f"spots/{section}_selection.tsv", sep="\t")
    spots.index = spots["x"].astype(int).astype(str) + "x" + spots["y"].astype(int).astype(str)
    spots = spots[~spots.index.duplicated()]
    keep = counts.index.intersection(spots.index, sort=False)  # spots measured and listed under the tissue
    spots = spots.loc[keep]
    matrix = sparse.csr_matrix(counts.loc[keep].to_numpy(dtype=np.float32))
    # pixels per array step from the sub-spot-precise array positions (new_x, new_y) and the pixel positions
    steps = [abs(np.polyfit(spots[a], spots[p], 1)[0]) for a, p in (("new_x", "pixel_x"), ("new_y", "pixel_y"))]
    meta = pd.DataFrame(
        {
            "array_x": spots["x"].to_numpy(dtype=np.int64),
            "array_y": spots["y"].to_numpy(dtype=np.int64),
            "pixel_x": spots["pixel_x"].to_numpy(dtype=np.float64),
            "pixel_y": spots["pixel_y"].to_numpy(dtype=np.float64),
        },
        index=keep,
    )
    labels = root / f"labels/{section}_labeled_coordinates.tsv"
    meta["label"] = _join_labels(labels, meta) if labels.is_file() else np.nan
    return meta, matrix, list(counts.columns), float(np.mean(steps)) if len(spots) > 2 else float("nan")


def _read_counts(file: Path) -> pd.DataFrame:
    """Read a spots x genes tab-separated count file (about 3x faster than ``pandas.read_csv`` on 16k columns)."""
    with gzip.open(file, "rb") as handle:
        genes = handle.readline().rstrip(b"\r\n").decode().split("\t")[1:]  # keep duplicated symbols as they are
        rows = [row.split(b"\t", 1) for row in handle.read().splitlines() if row.strip()]
    values = np.array(b"\t".join(r[1] for r in rows).split(b"\t"), dtype=np.int64).reshape(len(rows), len(genes))
    return pd.DataFrame(values, index=[r[0].decode() for r in rows], columns=genes)


def _join_labels(file: Path, meta: pd.DataFrame) -> pd.Series:
    """Pathologist labels joined on rounded array coordinates (their pixel columns use another frame)."""
    lab = pd.read_csv(file, sep="\t").dropna(subset=["x", "y", "label"])
    keys = lab["x"].round().astype(int).astype(str) + "x" + lab["y"].round().astype(int).astype(str)
    lookup = pd.Series(lab["label"].astype(str).to_numpy(), index=keys)
    lookup = lookup[~lookup.index.duplicated()]
    return pd.Series(meta.index, index=meta.index).map(lookup)


def _select_genes(genes: str | list[str], union: list[str], root: Path) -> list[str]:
    if genes == "all":
        return union
    if genes == "hvg":
        return [str(g) for g in np.load(root / _HVG_FILE, allow_pickle=False)]
    present = set(union)
    missing = [g for g in genes if g not in present]
    if missing:
        raise KeyError(f"Gene(s) not measured in the requested sections: {missing[:10]}.")
    return list(dict.fromkeys(genes))


def her2st(
    sections: Sequence[str] | None = None,
    path: str | Path | None = None,
    genes: Literal["all", "hvg"] | Sequence[str] = "all",
    image_downscale: int = 1,
    load_images: bool = True,
) -> SpatialData:
    """HER2-positive breast tumours profiled by legacy Spatial Transcriptomics, with H&E images.

    Andersson et al., *Spatial deconvolution of HER2-positive breast cancer delineates tumor-associated cell type
    interactions*, Nat Commun 12:6012 (2021), https://doi.org/10.1038/s41467-021-26271-2. Data from
    https://github.com/almaan/her2st (36 sections, 8 patients; 100 µm spots, 200 µm apart; about 290 full-resolution
    pixels per array step, i.e. about 0.69 µm per pixel, for patients B and C). Pathologist labels exist for A1, B1,
    C1, D1, E1, F1, G2 and H1. The ``"hvg"`` gene list (785 genes) is the one used by HisToGene (Pang et al., 2021,
    https://github.com/maxpmx/HisToGene, MIT) and Hist2ST on this data. Downloads fetch H&E images for B4, C2, C3,
    C4 and C5 only (the sections whose spot pixel coordinates were checked against the image); a local
    ``images/<s>.jpg`` is used for any section.

    Parameters
    ----------
    sections
        Section names such as ``["C2", "C3"]``; None reads the five sections with H&E images (B4, C2, C3, C4, C5).
    path
        Folder laid out as ``counts/<s>.tsv.gz``, ``spots/<s>_selection.tsv``, optionally ``images/<s>.jpg``,
        ``labels/<s>_labeled_coordinates.tsv`` and ``genes/her_hvg_cut_1000.npy``. None downloads the files (pinned
        to a commit of the repositories above) into ``pooch.os_cache("sslspatial")``.
    genes
        ``"all"``: union of the genes of the requested sections (a gene absent from a section's file has count 0
        there); ``"hvg"``: the 785 genes of ``her_hvg_cut_1000.npy`` in that file's order; or a list of gene symbols.
    image_downscale
        Integer factor by which images are reduced when read (JPEG DCT scaling, then box averaging); the image
        carries a ``Scale`` transformation so coordinates stay in full-resolution pixels.
    load_images
        Whether to read the H&E images (sections without an image never get one).

    Returns
    -------
    SpatialData with, per section ``s``, in coordinate system ``s`` (full-resolution pixels):

    - ``images[f"{s}_image"]``: RGB uint8 ``(c, y, x)``, transformation ``Scale(image_downscale)``;
    - ``shapes[f"{s}_spots"]``: circles of radius 50 µm in pixels (a quarter of the fitted pixels per array step),
      index ``f"{s}_{x}x{y}"`` (unique across sections), identity transformation;

    and ``tables["table"]`` annotating every ``f"{s}_spots"`` (region key ``"region"``, instance key ``"spot_id"``):
    X raw UMI counts (CSR, float32), obs ``section``, ``region``, ``spot_id``, ``array_x``, ``array_y`` (array
    coordinates), ``label``
    (pathologist label joined on rounded array coordinates; NaN where a section or spot has none), obsm
    ``"spatial"`` = pixel coordinates (x, y), uns ``"her2st"`` with the pixels per array step of each section.
    Only spots present in both the counts and the spot-selection file are kept.

    Examples
    --------
    >>> import sslspatial as ss
    >>> sdata = ss.datasets.her2st(["C2"], path="data/her2st", image_downscale=4)  # doctest: +SKIP
    >>> sdata["table"].shape  # doctest: +SKIP
    (187, 15706)
    >>> sdata = ss.datasets.her2st()  # downloads the five imaged sections  # doctest: +SKIP
    """
    import anndata as ad
    from spatialdata import SpatialData

    root = check_path(path, "her2st")
    section_list, gene_choice = _check_args(sections, root, genes, image_downscale)
    required: dict[str, Remote | None] = {}
    optional: dict[str, Remote | None] = {}
    for s in section_list:
        req, opt = _files(s)
        required.update(req)
        optional.update(opt if load_images else {k: v for k, v in opt.items() if not k.startswith("images/")})
    if gene_choice == "hvg":
        required[_HVG_FILE] = Remote(_HVG_URL, _HVG_SHA256)
    root = fetch("her2st", root, required, optional)

    metas, matrices, gene_lists, steps = [], [], [], {}
    for s in section_list:
        meta, matrix, section_genes, step = _read_section(root, s)
        meta.index = f"{s}_" + meta.index
        meta.insert(0, "section", s)
        metas.append(meta)
        matrices.append(matrix)
        gene_lists.append(section_genes)
        steps[s] = step
    union = list(dict.fromkeys(g for lst in gene_lists for g in lst))
    var_names = _select_genes(gene_choice, union, root)
    column = pd.Index(var_names)
    blocks = []
    for matrix, section_genes in zip(matrices, gene_lists, strict=True):
        pos = column.get_indexer(section_genes)
        src = np.flatnonzero(pos >= 0)
        select = sparse.csr_matrix(
            (np.ones(len(src), np.float32), (src, pos[src])), shape=(len(section_genes), len(column))
        )
        blocks.append((matrix @ select).tocsr())
    obs = pd.concat(metas)
    obs["region"] = pd.Categorical(
        [f"{s}_spots" for s in obs["section"]], categories=[f"{s}_spots" for s in section_list]
    )
    obs["section"] = pd.Categorical(obs["section"], categories=section_list)
    obs["spot_id"] = obs.index.to_numpy()
    obs["label"] = pd.Categorical(obs["label"])
    table = ad.AnnData(
        X=sparse.vstack(blocks, format="csr").astype(np.float32),
        obs=obs.drop(columns=["pixel_x", "pixel_y"]),
        var=pd.DataFrame(index=column),
    )
    table.obsm["spatial"] = obs[["pixel_x", "pixel_y"]].to_numpy(dtype=np.float64)
    table.uns["her2st"] = {
        "pixels_per_array_step": steps,
        "spot_diameter_um": SPOT_DIAMETER_UM,
        "array_pitch_um": ARRAY_PITCH_UM,
        "genes": gene_choice if isinstance(gene_choice, str) else "custom",
    }
    return _assemble(SpatialData, table, obs, section_list, steps, root, load_images, int(image_downscale))


def _assemble(
    spatialdata_cls: type,
    table: AnnData,
    obs: pd.DataFrame,
    sections: list[str],
    steps: dict[str, float],
    root: Path,
    load_images: bool,
    downscale: int,
) -> SpatialData:
    import geopandas as gpd
    from shapely import points
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity, Scale

    images, shapes = {}, {}
    for s in sections:
        rows = obs[obs["section"] == s]
        step = steps[s] if np.isfinite(steps[s]) else float(np.nanmean(list(steps.values())))
        radius = np.full(len(rows), step * (SPOT_DIAMETER_UM / 2) / ARRAY_PITCH_UM)
        circles = gpd.GeoDataFrame(
            {"radius": radius}, geometry=points(rows[["pixel_x", "pixel_y"]].to_numpy()), index=rows.index.copy()
        )
        shapes[f"{s}_spots"] = ShapesModel.parse(circles, transformations={s: Identity()})
        image_file = root / f"images/{s}.jpg"
        if load_images and image_file.is_file():
            images[f"{s}_image"] = Image2DModel.parse(
                read_rgb(image_file, downscale),
                dims=("c", "y", "x"),
                c_coords=["r", "g", "b"],
                transformations={s: Scale([float(downscale), float(downscale)], axes=("x", "y"))},
            )
    table = TableModel.parse(
        table, region=[f"{s}_spots" for s in sections], region_key="region", instance_key="spot_id"
    )
    return spatialdata_cls(images=images, shapes=shapes, tables={"table": table})
