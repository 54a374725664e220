"""Explanation-guided training methods (see base.py for the contract).

Importing this package registers ``bayes_feedback``, ``rrr``, ``xgradient_prior``,
``counterexamples`` and ``proxy_attention`` in :data:`rightfocus.GUIDANCE`.
"""

from rightfocus.guidance.attribution_prior import XGradientPrior, gini
from rightfocus.guidance.base import Guidance, GuidedBatch, guided_forward, register_guidance
from rightfocus.guidance.bayes_feedback import BayesFeedback
from rightfocus.guidance.counterexamples import Counterexamples
from rightfocus.guidance.proxy_attention import ProxyAttention
from rightfocus.guidance.rrr import RRR

__all__ = [
    "RRR",
    "BayesFeedback",
    "Counterexamples",
    "Guidance",
    "GuidedBatch",
    "ProxyAttention",
    "XGradientPrior",
    "gini",
    "guided_forward",
    "register_guidance",
]
