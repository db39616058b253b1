"""Building blocks shared by modules: graph encoders, ConvMixer patch encoder, spot context, heads, likelihoods."""

from .. import _attach

__getattr__, __dir__, __all__ = _attach(
    __name__,
    attributes={
        "COUNT_LIKELIHOODS": "_likelihoods",
        "ENCODERS": "_graph_encoders",
        "LIKELIHOODS": "_likelihoods",
        "ConvMixerEncoder": "_hist2st",
        "GeneDispersionNB": "_likelihoods",
        "GraphEncoder": "_graph_encoders",
        "InputAdapter": "_adapter",
        "MLPHead": "_graph_encoders",
        "SpotContext": "_hist2st",
        "check_likelihood": "_likelihoods",
        "likelihood_distribution": "_likelihoods",
    },
)
