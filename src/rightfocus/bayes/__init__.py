"""Bayesian CNNs with the local reparameterization trick (rightfocus.bayes).

Layers (:mod:`~rightfocus.bayes.layers`), conversion of any model to and from its Bayesian form
(:mod:`~rightfocus.bayes.convert`), and ELBO terms, Monte-Carlo prediction and uncertainty
(:mod:`~rightfocus.bayes.inference`).
"""

from rightfocus.bayes.convert import (
    bayesian_layers,
    is_bayesian,
    kl,
    mark_weights_loaded,
    to_bayesian,
    to_deterministic,
    weights_loaded,
)
from rightfocus.bayes.inference import (
    MCPrediction,
    elbo_terms,
    expected_entropy,
    mc_predict,
    mutual_information,
    predict_batches,
    predict_probs,
    predictive_entropy,
)
from rightfocus.bayes.layers import BayesConv2d, BayesLinear

__all__ = [
    "BayesConv2d",
    "BayesLinear",
    "MCPrediction",
    "bayesian_layers",
    "elbo_terms",
    "expected_entropy",
    "is_bayesian",
    "kl",
    "mark_weights_loaded",
    "mc_predict",
    "mutual_information",
    "predict_batches",
    "predict_probs",
    "predictive_entropy",
    "to_bayesian",
    "to_deterministic",
    "weights_loaded",
]
