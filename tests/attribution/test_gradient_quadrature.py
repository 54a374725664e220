"""Integrated Gradients' quadrature and option checks: Gauss-Legendre nodes in O(n) memory,
bad ``n_steps`` and non-finite baselines refused."""

from __future__ import annotations

import time

import numpy as np
import pytest
import scipy.special
import torch

from rightfocus.attribution.gradient import (
    MAX_STEPS,
    MAX_STEPS_WARN,
    IntegratedGradients,
    gauss_legendre,
    riemann_steps,
)
from rightfocus.models import LeNet


@pytest.mark.parametrize("n", [1, 2, 7, 100, 101, 150, 1001])
def test_gauss_legendre_matches_scipy(n):
    x, w = gauss_legendre(n)
    xr, wr = scipy.special.roots_legendre(n)
    np.testing.assert_allclose(x, xr, rtol=0, atol=1e-14)
    # numpy's leggauss and scipy differ by ~1e-11 of the largest weight too
    np.testing.assert_allclose(w, wr, rtol=0, atol=5e-11 * wr.max())


@pytest.mark.parametrize("n", [150, 2000])
def test_gauss_legendre_integrates_polynomials_exactly(n):
    """An n-point rule integrates every polynomial of degree <= 2n - 1 exactly."""
    x, w = gauss_legendre(n)
    assert np.all(np.diff(x) > 0) and np.all(w > 0)
    for degree in (0, 2, 10, 40):
        exact = 2.0 / (degree + 1)
        assert abs(float((w * x**degree).sum()) - exact) < 1e-13
    assert abs(float((w * x**7).sum())) < 1e-14


def test_many_steps_are_fast_and_small():
    """8,000 nodes took 103 s with the companion-matrix eigenproblem; now well under that."""
    start = time.perf_counter()
    x, w = gauss_legendre(8000)
    assert time.perf_counter() - start < 20
    assert x.shape == w.shape == (8000,) and abs(float(w.sum()) - 2) < 1e-12


def test_n_steps_must_be_an_int():
    with pytest.raises(TypeError, match="n_steps must be an int"):
        IntegratedGradients(n_steps=True)
    with pytest.raises(TypeError, match="n_steps must be an int"):
        IntegratedGradients(n_steps=50.0)
    with pytest.raises(ValueError, match=">= 1"):
        IntegratedGradients(n_steps=0)


def test_huge_n_steps_warn_then_refuse():
    with pytest.warns(UserWarning, match="few hundred steps"):
        riemann_steps(MAX_STEPS_WARN + 1, "riemann_left")
    with pytest.raises(ValueError, match="more than"):
        IntegratedGradients(n_steps=MAX_STEPS + 1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_baseline_is_refused(bad):
    with pytest.raises(ValueError, match="finite"):
        IntegratedGradients(baseline=bad)
    base = torch.zeros(1, 1, 28, 28)
    base[0, 0, 3, 3] = bad
    x = torch.rand(2, 1, 28, 28)
    with pytest.raises(ValueError, match="NaN or Inf"):
        IntegratedGradients(baseline=base, n_steps=4)(LeNet().eval(), x, 0)
