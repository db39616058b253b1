"""
Super-resolution of spot data
=============================

:func:`ss.tl.superres <sslspatial.tl.superres>` splits every spot of an ST-like array into 2 x 2 sub-spots from the
spot counts, the spot graph and image features, and writes the table ``<table>_superres`` (with shapes for the
sub-spots). The synthetic tissue knows the true sub-spot counts, drawn in the third column.
"""

import matplotlib.pyplot as plt

import sslspatial as ss

sdata = ss.datasets.synthetic_tissue(n_cells=1000, seed=0, spot_layouts=("st",))
ss.pp.build_graph(sdata, table_key="table_st", method="knn", n_neighs=4)
ss.tl.superres(
    sdata,
    table_key="table_st",
    shapes_key="spots_st",
    image_key="he",
    layout="square",
    n_subspots=4,
    max_epochs=10,
    train_kwargs={"enable_progress_bar": False},
)
enhanced = sdata.tables["table_st_superres"]

# %%
# Spots, enhanced sub-spots and the truth, for two genes.
ss.pl.superres_maps(
    sdata.tables["table_st"], enhanced, list(enhanced.var_names[:2]), truth_table=sdata.tables["table_subspots_st"]
)
plt.show()
