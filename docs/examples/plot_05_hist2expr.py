"""
Expression from H&E
===================

:func:`ss.tl.hist2expr <sslspatial.tl.hist2expr>` learns to predict spot expression from the H&E patch under each
spot. Here it trains on the left half of the synthetic tissue's Visium-like spots and predicts the right half from
the image alone; the result is a new table ``sdata.tables["hist2expr"]`` with the per-gene Pearson correlation of
each predicted region in ``var``.
"""

import matplotlib.pyplot as plt

import sslspatial as ss

sdata = ss.datasets.synthetic_tissue(n_cells=1000, seed=0, spot_layouts=("visium",))
spots = sdata.tables["table_visium"]
x = spots.obsm["spatial"][:, 0]
spots.obs["half"] = (x > x.mean()).astype(int).astype(str)  # "0": train, "1": predicted from the image
ss.tl.hist2expr(
    sdata,
    table_key="table_visium",
    image_key="he",
    library_key="half",
    train_regions=["0"],
    predict_regions=["1"],
    max_epochs=5,
    train_kwargs={"enable_progress_bar": False},
)
pearson = sdata.tables["hist2expr"].var["pearson_1"]
print(f"mean Pearson on the held-out half: {pearson.mean():.3f}")

# %%
# Per-gene correlation between predicted and measured expression on the held-out half.
ss.pl.gene_correlations(pearson)
plt.show()
