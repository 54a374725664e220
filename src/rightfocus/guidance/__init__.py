"""Explanation-guided training methods (see base.py for the contract).

Importing this package registers ``bayes_feedback``, ``rrr``, ``xgradient_prior`` and
``counterexamples`` in :data:`rightfocus.GUIDANCE`. Proxy Attention is a Lightning callback in
:mod:`rightfocus.guidance.proxy_attention` (imported on demand: it pulls in Lightning).
"""

from rightfocus.guidance.attribution_prior import XGradientPrior, gini
from rightfocus.guidance.base import Guidance, GuidedBatch, guided_forward
from rightfocus.guidance.bayes_feedback import BayesFeedback
from rightfocus.guidance.counterexamples import Counterexamples
from rightfocus.guidance.rrr import RRR

__all__ = [
    "RRR",
    "BayesFeedback",
    "Counterexamples",
    "Guidance",
    "GuidedBatch",
    "XGradientPrior",
    "gini",
    "guided_forward",
]
