"""
Pretrain, then annotate from a few labels
=========================================

:func:`ss.tl.pretrain_mask <sslspatial.tl.pretrain_mask>` trains a graph encoder without labels (it hides whole
cells and reconstructs their counts from the neighbours) and writes ``obsm["X_pretrain_mask"]``;
:func:`ss.tl.annotate <sslspatial.tl.annotate>` then types every cell from the labels of the training cells only.
The test cells are whole spatial blocks, kept two hops away from every training cell.
"""

import matplotlib.pyplot as plt

import sslspatial as ss
from sslspatial.data import buffer_split, spatial_block_split
from sslspatial.metrics import classification_report

sdata = ss.datasets.synthetic_tissue(n_cells=1000, seed=0, spot_layouts=(), image=False)
ss.pp.build_graph(sdata, method="radius", radius=30.0)
table = sdata.tables["table"]
model = ss.tl.pretrain_mask(sdata, max_epochs=3, train_kwargs={"enable_progress_bar": False})

split = spatial_block_split(table.obsm["spatial"], n_blocks=4, test_fraction=0.5, seed=0)
split = buffer_split(split, table.obsp["spatial_connectivities"], n_hops=2)
ss.tl.annotate(
    sdata, model, "cell_type", method="linear", train_indices=split.train
)  # default "auto": cross-validated choice
truth = table.obs["cell_type"].iloc[split.test]
prediction = table.obs["annotate_prediction"].iloc[split.test]
print(f"macro-F1 on the held-out blocks: {classification_report(truth, prediction)['macro_f1']:.3f}")

# %%
# Which types are confused with which, on the held-out cells.
ss.pl.confusion_matrix(truth, prediction)
plt.show()
