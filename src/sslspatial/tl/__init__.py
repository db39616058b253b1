"""Tools: self-supervised pretraining, annotation, histology-to-expression, super-resolution."""

__all__: list[str] = []
