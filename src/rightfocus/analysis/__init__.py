"""Model-level analysis: what a whole class or a whole unit responds to.

Unlike the per-input attribution methods in :mod:`rightfocus.attribution`, these are plain
functions (not registered in ``METHODS``):

- :func:`class_visualization` — class model visualisation (Simonyan et al. 2014): the image
  maximising a class's L2-regularised logit, by gradient ascent.
- :func:`dissect` — light network dissection (Bau et al. 2017): IoU of every unit's
  top-quantile activation region with binary concept masks.
"""

from rightfocus.analysis.class_visualization import ClassVisualization, class_visualization
from rightfocus.analysis.dissection import Dissection, dissect, unit_quantiles

__all__ = [
    "ClassVisualization",
    "Dissection",
    "class_visualization",
    "dissect",
    "unit_quantiles",
]
