"""Plots built on squidpy, spatialdata-plot and matplotlib."""

__all__: list[str] = []
