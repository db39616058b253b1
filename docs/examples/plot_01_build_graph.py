"""
Build a spatial graph
=====================

:func:`ss.pp.build_graph <sslspatial.pp.build_graph>` connects every cell to the cells within ``radius`` (here in
µm), per section and symmetrically, and writes squidpy's keys (``obsp["spatial_connectivities"]``,
``obsp["spatial_distances"]``, ``uns["spatial_neighbors"]``).
"""

import matplotlib.pyplot as plt
import numpy as np

import sslspatial as ss

sdata = ss.datasets.synthetic_tissue(n_cells=800, seed=0, spot_layouts=(), image=False)
ss.pp.build_graph(sdata, method="radius", radius=40.0)
table = sdata.tables["table"]
degree = table.uns["spatial_neighbors"]["degree"]
print(f"mean degree {degree['mean_degree']:.2f}, isolated cells {degree['n_isolated']}")

# %%
# Every edge, over the cells coloured by type.
xy = table.obsm["spatial"]
rows, cols = table.obsp["spatial_connectivities"].nonzero()
fig, ax = plt.subplots(figsize=(5, 5))
ax.plot(np.stack([xy[rows, 0], xy[cols, 0]]), np.stack([xy[rows, 1], xy[cols, 1]]), color="0.75", lw=0.4)
ax.scatter(xy[:, 0], xy[:, 1], c=table.obs["cell_type"].cat.codes, cmap="tab10", s=12, zorder=2)
ax.set_aspect("equal")
ax.set_title(f"radius graph, mean degree {degree['mean_degree']:.1f}")
plt.show()
