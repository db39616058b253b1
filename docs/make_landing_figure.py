"""Draw the figure of the landing page: a tissue, its spatial domains, and spot data enhanced to sub-spots.

Everything is computed here on the seeded synthetic tissue (a few seconds on a CPU): ``docs/conf.py`` runs this script
when ``_static/landing.png`` is missing or older than this file, and it can be run alone::

    python docs/make_landing_figure.py [--out docs/_static/landing.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

OUT = Path(__file__).resolve().parent / "_static" / "landing.png"


def _dense(x):
    import numpy as np

    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=float)


def make_figure(out: Path = OUT, seed: int = 0) -> Path:
    """Compute the three panels on the synthetic tissue and save them to ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.collections import EllipseCollection
    from spatialdata.transformations import get_transformation

    import sslspatial as ss

    sdata = ss.datasets.synthetic_tissue(n_cells=3000, seed=seed)
    cells = sdata.tables["table"]
    ss.pp.build_graph(sdata, method="radius", radius=30.0)
    ss.tl.domains(sdata, n_domains=4, seed=seed)  # the defaults: smoothed expression PCs, Gaussian mixture

    spots = sdata.tables["table_visium"]
    ss.pp.build_graph(sdata, table_key="table_visium", method="grid", n_neighs=6)
    ss.tl.superres(sdata, table_key="table_visium", shapes_key="spots_visium", image_key="he", max_epochs=20)
    enhanced, truth = sdata.tables["table_visium_superres"], sdata.tables["table_subspots_visium"]
    gene = str(spots.var_names[int(np.argmax(_dense(spots.X).var(0)))])

    image = sdata.images["he"]
    image = image["scale0"].ds["image"] if hasattr(image, "children") else image  # a pyramid or one array
    matrix = get_transformation(image, "global").to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))
    height, width = image.shape[-2:]
    extent = [matrix[0, 2], matrix[0, 2] + width * matrix[0, 0], matrix[1, 2] + height * matrix[1, 1], matrix[1, 2]]

    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4), constrained_layout=True)
    axes[0].imshow(np.moveaxis(np.asarray(image), 0, -1), extent=extent)
    axes[0].set_title("tissue: H&E image")
    xy = cells.obsm["spatial"]
    axes[1].scatter(xy[:, 0], xy[:, 1], c=cells.obs["domains"].cat.codes, cmap="tab10", s=5, linewidths=0)
    axes[1].set_title("spatial domains: ss.tl.domains")
    vmax = float(np.percentile(_dense(truth[:, gene].X), 99))
    for ax, table, title in [
        (axes[2], spots, f"spots ({gene} per sub-spot area)"),
        (axes[3], enhanced, f"sub-spots: ss.tl.superres ({gene})"),
    ]:
        n_sub = 1 if table is enhanced else enhanced.n_obs / spots.n_obs  # spot counts per sub-spot area
        geometry = (truth if table is enhanced else spots).uns.get("spot_geometry", {})
        radius = geometry.get(
            "subspot_radius" if table is enhanced else "spot_radius", 27.5 / (3 if table is enhanced else 1)
        )
        size = np.full(table.n_obs, 2 * float(radius))
        circles = EllipseCollection(size, size, 0, units="xy", offsets=table.obsm["spatial"], transOffset=ax.transData,
                                    cmap="magma", linewidths=0)  # fmt: skip
        circles.set_array(_dense(table[:, gene].X).ravel() / n_sub)
        circles.set_clim(0, vmax)
        ax.add_collection(circles)
        ax.set_title(title)
    for ax in axes:
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    print(make_figure(parser.parse_args(argv).out))


if __name__ == "__main__":
    main()
