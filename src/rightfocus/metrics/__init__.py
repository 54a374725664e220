"""Metrics: pure functions on tensors (classification, right reasons, faithfulness, sanity,
calibration, uncertainty, representation similarity)."""

from rightfocus.metrics.calibration import (
    brier_score,
    classwise_ece,
    expected_calibration_error,
    fit_temperature,
    maximum_calibration_error,
    nll,
    reliability_data,
)
from rightfocus.metrics.classification import UndefinedMetricWarning, classification_report
from rightfocus.metrics.explanation import overlap, pointing_game, relevance_mass, relevance_rank
from rightfocus.metrics.faithfulness import deletion, insertion, log_odds_change
from rightfocus.metrics.sanity import model_randomisation_check
from rightfocus.metrics.similarity import cka_matrix, linear_cka
from rightfocus.metrics.uncertainty import accuracy_rejection_curve, explanation_uncertainty

__all__ = [
    "UndefinedMetricWarning",
    "accuracy_rejection_curve",
    "brier_score",
    "cka_matrix",
    "classification_report",
    "classwise_ece",
    "deletion",
    "expected_calibration_error",
    "explanation_uncertainty",
    "fit_temperature",
    "insertion",
    "linear_cka",
    "log_odds_change",
    "maximum_calibration_error",
    "model_randomisation_check",
    "nll",
    "overlap",
    "pointing_game",
    "relevance_mass",
    "relevance_rank",
    "reliability_data",
]
