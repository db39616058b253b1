"""Building blocks shared by modules: graph encoders, ConvMixer patch encoder, spot context, projection heads."""

from .. import _attach

__getattr__, __dir__, __all__ = _attach(
    __name__,
    attributes={
        "ENCODERS": "_graph_encoders",
        "ConvMixerEncoder": "_hist2st",
        "GraphEncoder": "_graph_encoders",
        "MLPHead": "_graph_encoders",
        "SpotContext": "_hist2st",
    },
)
