"""Synthetic tissue with ground truth, and readers of real public datasets."""

__all__: list[str] = []
