"""
Spatial domains
===============

:func:`ss.tl.domains <sslspatial.tl.domains>` with its defaults needs no training: it smooths the expression
principal components over the spatial graph and fits a Gaussian mixture. It writes ``obs["domains"]``.
"""

import matplotlib.pyplot as plt

import sslspatial as ss
from sslspatial.metrics import clustering_report

sdata = ss.datasets.synthetic_tissue(n_cells=2000, seed=0, spot_layouts=(), image=False)
ss.pp.build_graph(sdata, method="radius", radius=30.0)
ss.tl.domains(sdata, n_domains=4)
table = sdata.tables["table"]
ari = clustering_report(table.obs["domain"], table.obs["domains"])["ari"]

# %%
# The true layers (left) and the domains found (right).
xy = table.obsm["spatial"]
fig, axes = plt.subplots(1, 2, figsize=(9, 4.5), sharey=True)
for ax, key, title in [(axes[0], "domain", "truth"), (axes[1], "domains", f"ss.tl.domains (ARI {ari:.2f})")]:
    ax.scatter(xy[:, 0], xy[:, 1], c=table.obs[key].cat.codes, cmap="tab10", s=6)
    ax.set_aspect("equal")
    ax.set_title(title)
plt.show()
