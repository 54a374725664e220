"""Classification and calibration metrics equal scikit-learn / torchmetrics on random inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from torchmetrics.classification import MulticlassCalibrationError

from rightfocus.metrics import calibration as cal
from rightfocus.metrics.classification import classification_report, confusion_matrix


def _random(n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    probs = torch.randn(n, k, generator=g).mul(2).softmax(-1)
    y = torch.randint(0, k, (n,), generator=g)
    return probs, y


@pytest.mark.parametrize("k", [2, 5])
def test_report_equals_sklearn(k: int) -> None:
    probs, y = _random(400, k, k)
    rep = classification_report(probs, y)
    p, t = probs.numpy(), y.numpy()
    pred = p.argmax(1)
    assert rep["accuracy"] == pytest.approx(skm.accuracy_score(t, pred), abs=1e-6)
    assert rep["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(t, pred), abs=1e-6)
    avg = "binary" if k == 2 else "macro"
    assert rep["f1"] == pytest.approx(skm.f1_score(t, pred, average=avg), abs=1e-6)
    auc = skm.roc_auc_score(t, p[:, 1]) if k == 2 else skm.roc_auc_score(t, p, multi_class="ovr")
    assert rep["auc"] == pytest.approx(auc, abs=1e-5)
    assert rep["nll"] == pytest.approx(skm.log_loss(t, p, labels=list(range(k))), rel=1e-5)
    assert rep["ece"] == pytest.approx(cal.expected_calibration_error(probs, y), abs=1e-12)
    assert np.array_equal(confusion_matrix(probs, y).numpy(), skm.confusion_matrix(t, pred))


@pytest.mark.parametrize("bins", [5, 15])
def test_ece_equals_torchmetrics(bins: int) -> None:
    probs, y = _random(1000, 4, bins)
    ours = cal.expected_calibration_error(probs, y, n_bins=bins)
    ref = MulticlassCalibrationError(num_classes=4, n_bins=bins, norm="l1")(probs, y)
    assert ours == pytest.approx(float(ref), abs=1e-6)
    mce = MulticlassCalibrationError(num_classes=4, n_bins=bins, norm="max")(probs, y)
    assert cal.maximum_calibration_error(probs, y, n_bins=bins) == pytest.approx(
        float(mce), abs=1e-6
    )
    # the reliability-diagram bins (our own binning) give the same ECE / MCE as torchmetrics
    data = cal.reliability_data(probs, y, n_bins=bins)
    has = data.count > 0
    weighted = float((data.count[has] / data.count.sum() * data.gaps[has]).sum())
    assert weighted == pytest.approx(float(ref), abs=1e-6)
    assert float(data.gaps[has].max()) == pytest.approx(float(mce), abs=1e-6)


def test_equal_mass_bins_hold_equal_counts_and_nll_brier_match_sklearn() -> None:
    probs, y = _random(300, 3, 1)
    data = cal.reliability_data(probs, y, n_bins=10, strategy="mass")
    assert data.count.tolist() == [30.0] * 10
    assert cal.nll(probs, y) == pytest.approx(skm.log_loss(y.numpy(), probs.numpy()), rel=1e-5)
    onehot = np.eye(3)[y.numpy()]
    brier = ((probs.numpy() - onehot) ** 2).sum(1).mean()
    assert cal.brier_score(probs, y) == pytest.approx(brier, rel=1e-6)
    assert 0.0 <= cal.classwise_ece(probs, y) <= 1.0


def test_temperature_scaling_recovers_a_known_temperature() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(20000, 10, generator=g) * 2.0
    y = torch.multinomial(z.softmax(-1), 1, generator=g).squeeze(1)
    fit = cal.fit_temperature(z * 2.5, y)  # over-confident logits, true T = 2.5
    assert fit.temperature == pytest.approx(2.5, rel=0.02)
    assert fit.ece_after < fit.ece_before


def test_bad_probabilities_are_clear_errors() -> None:
    probs, y = _random(10, 3, 0)
    with pytest.raises(ValueError, match="sum to 1"):
        classification_report(probs * 0.5, y)
    with pytest.raises(ValueError, match="NaN"):
        classification_report(probs.clone().fill_(float("nan")), y)
    with pytest.raises(ValueError, match=r"shape \(10,\)"):
        classification_report(probs, y[:5])
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        cal.expected_calibration_error(probs[:0], y[:0])
    with pytest.raises(TypeError, match="integer"):
        cal.nll(probs, y.float())
