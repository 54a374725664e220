"""Bayesian explanation feedback: the -log N term over exactly the masked cells, the zeroing,
one moment computation per forward, and clear errors."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rightfocus import GUIDANCE, hooks
from rightfocus.bayes import BayesConv2d, to_bayesian
from rightfocus.guidance import RRR, BayesFeedback, GuidedBatch, guided_forward


class _Net(nn.Module):
    """8x8 input; the target conv ``features.3`` gives 2x2 cells of 4x4 input pixels each."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3), nn.ReLU()
        )
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


def _model() -> nn.Module:
    return to_bayesian(_Net(), rho_init=-2.0).double().train()


def _batch() -> GuidedBatch:
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    mask = torch.zeros(3, 1, 8, 8, dtype=torch.float64)
    mask[0, 0, 0:3, 0:3] = 1  # part of cell (0, 0): masked for "max" only
    mask[1, 0, 4:8, 6:8] = 1  # part of cell (1, 1): masked for "max" only
    mask[2, 0, 0:4, 4:8] = 1  # all of cell (0, 1): masked for both modes
    return GuidedBatch(x, torch.tensor([0, 1, 2]), mask)


EXPECTED_CELLS = {
    "max": {(0, 0, 0), (1, 1, 1), (2, 0, 1)},
    "min": {(2, 0, 1)},
}


def _reference(model: nn.Module, batch: GuidedBatch, seed: int, pool: str) -> torch.Tensor:
    """Slow, transparent Eq. 4 at features.3 (2x2 cells, each over a 4x4 pixel window)."""
    torch.manual_seed(seed)
    h = model.features[2](model.features[1](model.features[0](batch.x)))  # same eps draw
    conv = model.features[3]
    sw2 = (F.softplus(conv.rho_weight) + 1e-8) ** 2
    sb2 = (F.softplus(conv.rho_bias) + 1e-8) ** 2
    mean = F.conv2d(h, conv.mu_weight, conv.mu_bias)
    std = torch.sqrt(F.conv2d(h * h, sw2, sb2) + 1e-8)
    assert mean.shape[-2:] == (2, 2)
    total = torch.zeros((), dtype=torch.float64)
    cells = set()
    for n in range(batch.x.shape[0]):
        for i in range(2):
            for j in range(2):
                window = batch.mask[n, 0, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4]
                if (window.max() if pool == "max" else window.min()) == 1:
                    cells.add((n, i, j))
                    dist = torch.distributions.Normal(mean[n, :, i, j], std[n, :, i, j])
                    total = total - dist.log_prob(torch.zeros(())).sum()
    assert cells == EXPECTED_CELLS[pool]
    return total


@pytest.mark.parametrize("pool", ["max", "min"])
def test_feedback_term_equals_neg_log_normal_over_masked_cells(pool: str) -> None:
    model, batch = _model(), _batch()
    fb = BayesFeedback(lam=0.5, pool=pool)  # default: the last conv, features.3
    torch.manual_seed(7)
    _, _, terms = guided_forward(model, batch, [fb])
    expected = 0.5 * _reference(model, batch, 7, pool)
    torch.testing.assert_close(terms["feedback"], expected)


def test_resized_mask_on_lenet_last_conv_uses_pool_mode() -> None:
    from rightfocus.models import LeNet

    model = to_bayesian(LeNet(), rho_init=-2.0).train()
    x = torch.rand(2, 1, 28, 28)
    mask = torch.zeros(2, 1, 28, 28)
    mask[0, 0, 0:4, 0:4] = 1  # a Decoy-MNIST corner patch
    recorded = {}
    for pool in ("max", "min"):
        fb = BayesFeedback(lam=1.0, pool=pool)
        with hooks.capture_activations(model, [model.features.conv2]) as cap:
            guided_forward(model, GuidedBatch(x, torch.tensor([0, 1]), mask), [fb])
            recorded[pool] = (cap[model.features.conv2][0] == 0).all(dim=0)  # zeroed cells
    # 11x11 cells of 28 -> 11 (via 13x13 after pool1): max marks a 2x2 corner, min only (0, 0)
    assert recorded["max"].sum() == 4 and bool(recorded["max"][:2, :2].all())
    assert recorded["min"].sum() == 1 and bool(recorded["min"][0, 0])


def test_zeroing_only_in_sampled_training_forward() -> None:
    model, batch = _model(), _batch()
    layer = model.features[3]
    fb = BayesFeedback(layer="features.3", pool="max")
    with hooks.capture_activations(model, [layer]) as cap:
        guided_forward(model, batch, [fb])
        out = cap[layer]
    masked = torch.zeros(3, 1, 2, 2, dtype=torch.bool)
    for n, i, j in EXPECTED_CELLS["max"]:
        masked[n, 0, i, j] = True
    masked = masked.expand_as(out)
    assert bool((out[masked] == 0).all()) and bool((out[~masked] != 0).all())
    model.eval()
    with hooks.capture_activations(model, [layer]) as cap:
        guided_forward(model, batch, [fb])
        mean_out = cap[layer]
    with hooks.capture_activations(model, [layer]) as cap:
        model(batch.x)
        torch.testing.assert_close(mean_out, cap[layer])  # evaluation is untouched


def test_moments_computed_once_and_gradients_flow() -> None:
    model, batch = _model(), _batch()
    layer = model.features[3]
    with mock.patch.object(
        BayesConv2d, "moments", autospec=True, side_effect=BayesConv2d.moments
    ) as m:
        logits, _, terms = guided_forward(model, batch, [BayesFeedback(layer="features.3")])
    calls = [c for c in m.call_args_list if c.args[0] is layer]
    assert len(calls) == 1
    (logits.sum() + terms["feedback"]).backward()
    assert layer.rho_weight.grad is not None and layer.rho_weight.grad.abs().sum() > 0
    assert hooks.count_hooks(model) == 0


def test_switches_and_combination_with_rrr() -> None:
    model, batch = _model(), _batch()
    _, _, terms = guided_forward(model, batch, [BayesFeedback(layer="features.3", penalty=False)])
    assert terms == {}
    _, _, terms = guided_forward(
        model, batch, [BayesFeedback(layer="features.3", zero_masked=False), RRR(lam=1.0)]
    )
    assert set(terms) == {"feedback", "rrr"} and terms["rrr"] > 0
    with pytest.raises(ValueError, match="both off"):
        BayesFeedback(penalty=False, zero_masked=False)


def test_clear_errors(make_tiny_cnn: type[nn.Module]) -> None:
    batch = _batch()
    assert GUIDANCE.get("bayes_feedback") is BayesFeedback
    with pytest.raises(ValueError, match="to_bayesian"):
        guided_forward(make_tiny_cnn(classes=3).double(), batch, [BayesFeedback()])
    model = _model()
    model.features[3] = nn.Conv2d(4, 6, 3).double()
    with pytest.raises(ValueError, match=r"not Bayesian; choose one of .*: features\.0"):
        BayesFeedback().check(model)
    with pytest.raises(ValueError, match="not convolutional"):
        BayesFeedback(layer="fc").check(_model())
    with pytest.raises(ValueError, match="no layer named"):
        BayesFeedback(layer="features.9").check(_model())
    with pytest.raises(ValueError, match="pool"):
        BayesFeedback(pool="mean")
    with pytest.raises(RuntimeError, match="forward_context"):
        BayesFeedback().loss_terms(_model(), batch, torch.zeros(3, 3))


def test_receptive_field_pool_masks_every_cell_that_sees_the_patch() -> None:
    """On LeNet's conv2 (28 -> 26 -> 13 -> 11), cell j sees input rows [2j, 2j + 7]: a patch
    on rows 4:8, cols 0:4 (the paper's position 4) reaches cells rows 0..3, cols 0..1."""
    from rightfocus.models import LeNet

    model = to_bayesian(LeNet(), rho_init=-2.0).train()
    x = torch.rand(1, 1, 28, 28)
    mask = torch.zeros(1, 1, 28, 28)
    mask[0, 0, 4:8, 0:4] = 1
    zeroed = {}
    for pool in ("max", "receptive_field"):
        fb = BayesFeedback(lam=1.0, pool=pool)
        with hooks.capture_activations(model, [model.features.conv2]) as cap:
            guided_forward(model, GuidedBatch(x, torch.tensor([0]), mask), [fb])
            zeroed[pool] = (cap[model.features.conv2][0] == 0).all(dim=0)
    expected = torch.zeros(11, 11, dtype=torch.bool)
    expected[0:4, 0:2] = True  # rows 2j..2j+7 meet 4..7 for j = 0..3; cols meet 0..3 for j = 0, 1
    assert torch.equal(zeroed["receptive_field"], expected)
    assert zeroed["max"].sum() < expected.sum()  # the paper's pooling misses some of them
