"""Building blocks shared by modules: graph encoders, ConvMixer patch encoder, spot context, projection heads."""

from ._graph_encoders import ENCODERS, GraphEncoder, MLPHead
from ._hist2st import ConvMixerEncoder, SpotContext

__all__ = ["ENCODERS", "ConvMixerEncoder", "GraphEncoder", "MLPHead", "SpotContext"]
