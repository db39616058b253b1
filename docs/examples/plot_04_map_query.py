"""
Map a query section onto a reference
====================================

Pretrain on a labelled reference section, then :func:`ss.tl.map_query <sslspatial.tl.map_query>` transfers its
labels to a second section that no model saw, with a per-cell uncertainty
(``obs["map_query_prediction"]``, ``obs["map_query_uncertainty"]``).
"""

import matplotlib.pyplot as plt
import numpy as np

import sslspatial as ss
from sslspatial.metrics import classification_report

sdata = ss.datasets.synthetic_tissue(n_cells=1600, n_sections=2, seed=0, spot_layouts=(), image=False)
table = sdata.tables["table"]
sections = table.obs["section"].astype(str)
reference = table[sections == sections.iloc[0]].copy()
query = table[sections != sections.iloc[0]].copy()
for adata in (reference, query):
    ss.pp.build_graph(adata, method="radius", radius=30.0, overwrite=True)

model = ss.tl.pretrain_mask(reference, max_epochs=3, train_kwargs={"enable_progress_bar": False})
ss.tl.map_query(query, model, "cell_type", candidates=("linear",), ensemble=0)  # one probe: fast
report = classification_report(query.obs["cell_type"], query.obs["map_query_prediction"])
print(f"macro-F1 on the query section: {report['macro_f1']:.3f}")

# %%
# Cells mapped wrongly are mostly the ones with a high uncertainty: filter on it.
correct = (query.obs["cell_type"].astype(str) == query.obs["map_query_prediction"].astype(str)).to_numpy()
uncertainty = query.obs["map_query_uncertainty"].to_numpy()
fig, ax = plt.subplots(figsize=(5, 3.5))
bins = np.linspace(0, 1, 21)
ax.hist([uncertainty[correct], uncertainty[~correct]], bins=bins, stacked=True, label=["correct", "wrong"])
ax.set_xlabel("uncertainty (1 - highest class probability)")
ax.set_ylabel("query cells")
ax.legend()
plt.show()
