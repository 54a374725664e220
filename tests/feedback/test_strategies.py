"""Query strategies: known answers and slow references (scipy's Spearman, the overlap metric)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from rightfocus.feedback import strategies as S
from rightfocus.metrics.explanation import overlap


def test_misclassified_and_least_confident_known_answers() -> None:
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.34, 0.33, 0.33]])
    labels = torch.tensor([0, 0, 2])
    assert torch.allclose(S.misclassified(probs, labels), torch.tensor([0.3, 0.9, 0.67]))
    assert torch.allclose(S.least_confident(probs), torch.tensor([0.3, 0.4, 0.66]))


def test_disagreement_matches_scipy_spearman() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 3, 9, 9, generator=g, dtype=torch.float64)
    b = torch.randn(5, 3, 9, 9, generator=g, dtype=torch.float64)
    b[0] = a[0] * 2.0  # identical ranking: no disagreement
    got = S.disagreement(a, b)
    for i in range(5):
        ref = spearmanr(a[i].abs().sum(0).flatten(), b[i].abs().sum(0).flatten()).statistic
        assert got[i].item() == pytest.approx(1.0 - ref, abs=1e-9)
    assert got[0].item() == pytest.approx(0.0, abs=1e-12)


def test_mask_overlap_equals_the_overlap_metric() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.randn(4, 2, 7, 7, generator=g)
    m = (torch.rand(4, 1, 7, 7, generator=g) > 0.6).float()
    assert torch.allclose(S.mask_overlap(a, m), overlap(a, m).flatten(), atol=1e-6)


def test_uncertainty_is_relative_spread() -> None:
    mean = torch.ones(2, 1, 4, 4)
    std = torch.stack([torch.full((1, 4, 4), 0.5), torch.full((1, 4, 4), 2.0)])
    assert torch.allclose(S.uncertainty(mean, std), torch.tensor([0.5, 2.0]))


def test_rank_per_class_round_robin_and_exclude() -> None:
    scores = np.array([0.1, 0.9, 0.8, 0.7, 0.2, 0.95])
    indices = np.array([10, 11, 12, 13, 14, 15])
    labels = np.array([0, 0, 1, 1, 0, 2])
    assert S.rank(scores, indices) == [15, 11, 12, 13, 14, 10]
    # per class: best of class 0, 1, 2, then the second of 0 and 1, ...
    assert S.rank(scores, indices, labels) == [11, 12, 15, 14, 13, 10]
    assert S.rank(scores, indices, exclude=[15, 11], k=2) == [12, 13]
    with pytest.raises(ValueError, match="scores for"):
        S.rank(scores[:3], indices)


def test_random_scores_are_seeded() -> None:
    assert torch.equal(S.random_scores(6, 3), S.random_scores(6, 3))
    assert not torch.equal(S.random_scores(6, 3), S.random_scores(6, 4))


def _pool(n: int = 12) -> torch.utils.data.Dataset:
    from rightfocus.data.base import MaskedTensorDataset

    g = torch.Generator().manual_seed(2)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = torch.arange(n) % 4
    m = torch.zeros(n, 1, 8, 8)
    m[:, :, :3, :3] = 1
    return MaskedTensorDataset(x, y, m)


def test_score_pool_agrees_with_batch_functions(tiny_cnn: torch.nn.Module) -> None:
    from rightfocus.attribution import attribute

    tiny_cnn = tiny_cnn.float()
    pool = _pool()
    idx = [0, 3, 5, 7, 11]
    x = torch.stack([pool[i][0] for i in idx])
    y = torch.stack([pool[i][1] for i in idx])
    probs = tiny_cnn(x).softmax(-1)
    got = S.score_pool(tiny_cnn, pool, idx, "misclassified", batch_size=2)
    assert np.allclose(got, S.misclassified(probs, y).detach().numpy())
    got = S.score_pool(tiny_cnn, pool, idx, "overlap", batch_size=3)
    a = attribute(tiny_cnn, x, probs.argmax(1), method="saliency")
    ref = S.mask_overlap(a, torch.stack([pool[i][2] for i in idx]))
    assert np.allclose(got, ref.numpy())
    # masks from a store replace the dataset's; an absent one counts as empty
    got = S.score_pool(tiny_cnn, pool, idx, "overlap", masks=lambda i: None)
    assert np.allclose(got, 0.0)
    with pytest.raises(ValueError, match="Bayesian"):
        S.score_pool(tiny_cnn, pool, idx, "uncertainty")
    with pytest.raises(ValueError, match="Unknown strategy"):
        S.score_pool(tiny_cnn, pool, idx, "nonsense")


def test_uncertainty_strategy_on_a_bayesian_model(tiny_cnn: torch.nn.Module) -> None:
    from rightfocus.bayes import to_bayesian
    from rightfocus.metrics.uncertainty import explanation_uncertainty

    model = to_bayesian(tiny_cnn.float(), rho_init=-2.0).eval()
    pool = _pool()
    idx = [1, 2, 6, 9]
    got = S.score_pool(model, pool, idx, "uncertainty", mc_samples=4, seed=3, batch_size=2)
    x = torch.stack([pool[i][0] for i in idx])
    # the same posterior draws: batch by batch, seeded like score_pool
    ref = []
    with torch.random.fork_rng():
        torch.manual_seed(3)
        for b in (x[:2], x[2:]):
            from rightfocus.bayes.inference import predict_probs

            pred = predict_probs(model, b, True, 4).argmax(1)
            eu = explanation_uncertainty(model, b, pred, method="saliency", samples=4, seed=3)
            ref.append(S.uncertainty(eu.mean, eu.std))
    assert np.allclose(got, torch.cat(ref).numpy(), rtol=1e-5)
    assert (got > 0).all()
