"""One images-per-pass option (``internal_batch_size``, ``"auto"`` by default) chosen from a
memory budget; deprecated names still work with a DeprecationWarning."""

from __future__ import annotations

import pytest
import torch

from rightfocus import attribute
from rightfocus.attribution import base as attribution_base
from rightfocus.attribution.base import (
    MEMORY_BUDGET_ENV,
    activation_bytes,
    images_per_pass,
    memory_budget,
    parse_bytes,
)
from rightfocus.attribution.cam import ScoreCAM
from rightfocus.attribution.perturbation import Occlusion
from rightfocus.attribution.smoothing import NoiseTunnel
from rightfocus.models import LeNet


def _setup():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64)
    return LeNet().double().eval(), x, torch.tensor([0, 1, 2, 3])


def test_parse_bytes():
    assert parse_bytes("2GB") == 2 * 2**30
    assert parse_bytes("512 mb") == 512 * 2**20
    assert parse_bytes(1000) == 1000
    for bad in ("lots", "-1GB", 0, "2 parsecs"):
        with pytest.raises(ValueError):
            parse_bytes(bad)


def test_budget_from_option_env_and_default(monkeypatch):
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "3MB")
    assert memory_budget() == 3 * 2**20
    assert memory_budget("1GB") == 2**30  # the option wins
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "plenty")
    with pytest.raises(ValueError, match=MEMORY_BUDGET_ENV):
        memory_budget()
    monkeypatch.delenv(MEMORY_BUDGET_ENV)
    default = memory_budget()
    assert 0 < default <= attribution_base._available_cpu_bytes()


def test_activation_bytes_grow_with_the_batch():
    model, x, _ = _setup()
    one, four = activation_bytes(model, x[:1]), activation_bytes(model, x[:4])
    assert one > x[0].numel() * 4
    assert 3.5 * one < four < 4.5 * one


def test_auto_shrinks_to_the_budget():
    model, x, _ = _setup()
    per_image = activation_bytes(model, x[:1])
    assert images_per_pass(7, model, x) == 7
    assert images_per_pass("auto", model, x, budget=10 * 2**30) >= x.shape[0]
    assert images_per_pass("auto", model, x, budget=3 * per_image) == 3
    assert images_per_pass("auto", model, x, budget=1) == 1


@pytest.mark.parametrize(
    ("method", "opts"),
    [
        ("integrated_gradients", {"n_steps": 8}),
        ("smoothgrad", {"n_samples": 4, "seed": 0}),
        ("occlusion", {"window": (7, 7), "strides": (7, 7)}),
        ("rise", {"n_masks": 16, "seed": 0}),
        ("kernel_shap", {"num_samples": 16, "segments": "grid", "n_segments": 9, "seed": 0}),
        ("scorecam", {}),
        (
            "deepshap",
            {"baselines": torch.linspace(0, 1, 3 * 784, dtype=torch.float64).view(3, 1, 28, 28)},
        ),
    ],
)
def test_a_tiny_budget_splits_the_batch_with_the_same_result(method, opts):
    model, x, t = _setup()
    roomy = attribute(model, x, t, method, **opts)
    per_image = activation_bytes(model, x[:1])
    tight = attribute(model, x, t, method, memory_budget=2 * per_image, **opts)
    torch.testing.assert_close(tight, roomy, rtol=1e-5, atol=1e-6 * float(roomy.abs().max()))
    fixed = attribute(model, x, t, method, internal_batch_size=3, **opts)
    torch.testing.assert_close(fixed, roomy, rtol=1e-5, atol=1e-6 * float(roomy.abs().max()))


def test_old_option_names_warn_and_still_work():
    model, x, t = _setup()
    with pytest.warns(DeprecationWarning, match="internal_batch_size"):
        occ = Occlusion(window=(7, 7), strides=(7, 7), perturbations_per_eval=2)
    ref = Occlusion(window=(7, 7), strides=(7, 7))
    torch.testing.assert_close(occ(model, x, t), ref(model, x, t))
    with pytest.warns(DeprecationWarning, match="internal_batch_size"):
        sc = ScoreCAM(batch_size=8)
    assert sc.internal_batch_size == 8
    with pytest.warns(DeprecationWarning, match="'base'"):
        nt = NoiseTunnel(method="input_x_gradient", n_samples=2, seed=0)
    assert type(nt.base).__name__ == "InputXGradient"
    with pytest.raises(ValueError, match="positive int or 'auto'"):
        Occlusion(internal_batch_size=0)
