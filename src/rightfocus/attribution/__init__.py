"""Attribution methods behind one call: ``attribute(model, x, target, method=...)``."""

from rightfocus.attribution import (  # noqa: F401 (registers methods)
    cam,
    deeplift,
    gradient,
    perturbation,
    propagation,
    rise,
    smoothing,
    surrogate,
    transformer,
)
from rightfocus.attribution.base import Attribution, attribute, check_input, register_method
from rightfocus.attribution.cam import GradCAM
from rightfocus.attribution.gradient import (
    DeconvNet,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    Saliency,
)

__all__ = [
    "Attribution",
    "DeconvNet",
    "GradCAM",
    "GuidedBackprop",
    "InputXGradient",
    "IntegratedGradients",
    "Saliency",
    "attribute",
    "cam",
    "check_input",
    "gradient",
    "register_method",
]
