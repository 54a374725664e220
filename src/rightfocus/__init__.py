"""rightfocus: explain, measure and correct what image classifiers look at.

Public API (curated): :func:`attribute` and the method classes, the registries, the model zoo.
Importing the package registers every built-in method, model, dataset and guidance method.
"""

from rightfocus import (
    attribution,
    data,  # noqa: F401  (registers the built-in datasets)
    guidance,
    models,
)
from rightfocus._registry import DATASETS, GUIDANCE, METHODS, MODELS, Registry
from rightfocus.attribution import Attribution, attribute

__version__ = "0.1.0"

__all__ = [
    "DATASETS",
    "GUIDANCE",
    "METHODS",
    "MODELS",
    "Attribution",
    "Registry",
    "__version__",
    "attribute",
    "attribution",
    "guidance",
    "models",
]
