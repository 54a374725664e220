"""Figures: heatmap overlays, attribution grids."""

from rightfocus.viz.heatmap import attribution_grid, to_heatmap

__all__ = ["attribution_grid", "to_heatmap"]
