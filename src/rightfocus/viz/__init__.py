"""Figures: heatmap overlays, attribution grids."""

from rightfocus.viz.batch import batch_figure
from rightfocus.viz.heatmap import attribution_grid, to_heatmap

__all__ = ["attribution_grid", "batch_figure", "to_heatmap"]
