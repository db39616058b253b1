"""Readers of real public spatial omics datasets.

Each reader takes ``path``: a local folder holding the dataset's files (laid out as its docstring says), or None to
download the same files once from the original public source into ``pooch.os_cache("sslspatial")``.

==================  =============  ==========================================================================
reader              returns        data
==================  =============  ==========================================================================
``her2st``          SpatialData    HER2+ breast tumours, legacy ST + H&E (Andersson et al., 2021)
``osmfish``         SpatialData    osmFISH mouse somatosensory cortex (Codeluppi et al., 2018)
``starmap_mpfc``    SpatialData    STARmap mouse medial prefrontal cortex (Wang et al., 2018); needs ``path``
``cite_seq_skin``   SpatialData    spatial CITE-seq human skin, DBiT grid (Liu et al., 2023)
``cosmx_lung_mini`` SpatialData    CosMx NSCLC Lung12, two crops (He et al., 2022; GiottoData)
``visium_dg_mini``  SpatialData    10x Visium mouse brain, dentate gyrus crop (GiottoData)
==================  =============  ==========================================================================
"""

from __future__ import annotations

from ._readers_cells import osmfish, starmap_mpfc, visium_dg_mini
from ._readers_her2st import her2st
from ._readers_multimodal import cite_seq_skin, cosmx_lung_mini

__all__ = ["cite_seq_skin", "cosmx_lung_mini", "her2st", "osmfish", "starmap_mpfc", "visium_dg_mini"]
