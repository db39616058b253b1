"""Building blocks shared by modules: graph encoders, projection heads."""

from ._graph_encoders import ENCODERS, GraphEncoder, MLPHead

__all__ = ["ENCODERS", "GraphEncoder", "MLPHead"]

from ._hist2st import ConvMixerEncoder, SpotContext

__all__ += ["ConvMixerEncoder", "SpotContext"]
