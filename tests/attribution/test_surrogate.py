"""Kernel SHAP and LIME on superpixels: exact Shapley values, a slow reference, Captum, sklearn.

Comparison with Captum's ``KernelShap`` (same feature mask, zero baseline): Captum cannot
enumerate coalitions; it samples them from the same kernel distribution with torch's global
generator and enforces efficiency softly (weight 10^6 on the empty and full coalitions). So:
- on an additive game (a linear model of superpixel means) every full-rank design recovers the
  exact Shapley values, and both implementations agree tightly;
- on a CNN, ours enumerates all 2^4 coalitions (exact) and Captum's sampled estimate is
  compared with a loose tolerance (a few percent of the largest value).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rightfocus import attribute
from rightfocus.attribution.surrogate import (
    KernelShap,
    Lime,
    fill_baseline,
    grid_segments,
    sample_kernel_coalitions,
    shapley_kernel,
    slic_segments,
    weighted_ridge,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
H = W = 8


class SuperpixelLinear(nn.Module):
    """``f_c(x) = sum_j w_cj * mean_{p in j, channels} x_p`` for a fixed segmentation."""

    def __init__(self, labels: torch.Tensor, weights: torch.Tensor) -> None:
        super().__init__()
        self.onehot = F.one_hot(labels.flatten(), weights.shape[1]).double()
        self.weights = weights

    def means(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1).flatten(1) @ self.onehot / self.onehot.sum(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.means(x) @ self.weights.T


def per_superpixel(attr: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Read each superpixel's coefficient back from a broadcast ``(B, C, H, W)`` attribution."""
    onehot = F.one_hot(labels.flatten(), int(labels.max()) + 1).to(attr.dtype)
    values = attr[:, 0].flatten(1) @ onehot / onehot.sum(0)
    torch.testing.assert_close(values @ onehot.T, attr[:, 0].flatten(1))  # constant per region
    torch.testing.assert_close(attr, attr[:, :1].expand_as(attr))  # same in every channel
    return values


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(3, 2, H, W, dtype=torch.float64)


TARGET = torch.tensor([0, 2, 1])


@pytest.mark.parametrize("fill", ["zero", "mean", "blur"])
@pytest.mark.parametrize("exact", [True, False])
def test_kernel_shap_linear_model_gives_exact_shapley_values(x, fill, exact):
    labels = grid_segments(H, W, 9)
    model = SuperpixelLinear(labels, torch.randn(3, 9, dtype=torch.float64))
    attr = attribute(
        model, x, TARGET, "kernel_shap", segments=labels, baseline=fill, exact=exact,
        num_samples=60, seed=0,
    )  # fmt: skip
    base = fill_baseline(x, labels.flatten().expand(3, -1), fill)
    expected = model.weights[TARGET] * (model.means(x) - model.means(base))
    torch.testing.assert_close(per_superpixel(attr, labels), expected, rtol=0, atol=1e-6)


def shapley_reference(game, M: int) -> torch.Tensor:
    """Shapley (1953): ``phi_i = sum_{S ⊆ N \\ i} |S|! (M-|S|-1)! / M! (v(S ∪ i) - v(S))``."""
    phi = torch.zeros(M, dtype=torch.float64)
    for i in range(M):
        others = [j for j in range(M) if j != i]
        for size in range(M):
            for subset in itertools.combinations(others, size):
                weight = math.factorial(size) * math.factorial(M - size - 1) / math.factorial(M)
                phi[i] += weight * (game({*subset, i}) - game(set(subset)))
    return phi


def test_exact_kernel_shap_equals_shapley_formula_on_a_cnn(make_tiny_cnn: type[nn.Module], x):
    model = make_tiny_cnn(in_channels=2, classes=3).double().eval()
    labels = grid_segments(H, W, 4)
    attr = attribute(model, x, TARGET, "kernel_shap", segments=labels, baseline=0.5, seed=0)
    for i in range(x.shape[0]):

        def game(keep: set[int], i: int = i) -> float:
            mask = torch.isin(labels, torch.tensor(sorted(keep), dtype=torch.long))
            image = torch.where(mask, x[i], torch.full_like(x[i], 0.5))
            with torch.no_grad():
                return float(model(image.unsqueeze(0))[0, TARGET[i]])

        ref = shapley_reference(game, 4)
        torch.testing.assert_close(per_superpixel(attr[i : i + 1], labels)[0], ref)


def test_sampled_kernel_shap_approaches_exact_on_a_cnn(make_tiny_cnn: type[nn.Module], x):
    model = make_tiny_cnn(in_channels=2, classes=3).double().eval()
    labels = grid_segments(H, W, 9)
    exact = attribute(model, x, TARGET, "kernel_shap", segments=labels)
    sampled = attribute(
        model, x, TARGET, "kernel_shap", segments=labels, exact=False, num_samples=1000, seed=3
    )
    assert float((sampled - exact).abs().max()) < 0.05 * float(exact.abs().max())
    # efficiency holds exactly for the sampled estimate too
    torch.testing.assert_close(
        per_superpixel(sampled, labels).sum(1), per_superpixel(exact, labels).sum(1)
    )


def test_kernel_shap_vs_captum(make_tiny_cnn: type[nn.Module]):
    captum_attr = pytest.importorskip("captum.attr")
    x = torch.rand(2, 3, H, W, dtype=torch.float64)
    target = torch.tensor([1, 3])
    labels = grid_segments(H, W, 4)
    mask = labels[None, None].expand(1, 3, H, W)
    linear = SuperpixelLinear(labels, torch.randn(4, 4, dtype=torch.float64))
    cnn = make_tiny_cnn(in_channels=3, classes=4).double().eval()
    for model, n, tol in ((linear, 100, 1e-4), (cnn, 600, 0.05)):
        ours = attribute(model, x, target, "kernel_shap", segments=labels, seed=0)
        torch.manual_seed(0)
        ref = captum_attr.KernelShap(model).attribute(
            x, baselines=0.0, target=target, feature_mask=mask, n_samples=n,
            perturbations_per_eval=n,
        )  # fmt: skip
        assert float((ours - ref).abs().max()) < tol * float(ours.abs().max())


def test_shapley_kernel_and_sampler():
    M = 6
    sizes = torch.arange(1, M)
    expected = [(M - 1) / (math.comb(M, s) * s * (M - s)) for s in range(1, M)]
    torch.testing.assert_close(shapley_kernel(M, sizes), torch.tensor(expected).double())
    z = sample_kernel_coalitions(M, 4000, torch.Generator().manual_seed(0))
    assert z.shape == (4000, M) and set(z.sum(1).tolist()) <= set(range(1, M))
    torch.testing.assert_close(z[0::2] + z[1::2], torch.ones(2000, M, dtype=torch.float64))
    freq = torch.bincount(z.sum(1).long(), minlength=M)[1:] / 4000
    p = torch.tensor([math.comb(M, s) * e for s, e in zip(range(1, M), expected)])
    assert float((freq - p / p.sum()).abs().max()) < 0.03


def test_weighted_ridge_vs_sklearn():
    linear_model = pytest.importorskip("sklearn.linear_model")
    gen = torch.Generator().manual_seed(0)
    Z = torch.randint(0, 2, (40, 5), generator=gen).double()
    y = torch.randn(2, 40, generator=gen, dtype=torch.float64)
    w = torch.rand(40, generator=gen, dtype=torch.float64)
    beta, b = weighted_ridge(Z, w, y, alpha=0.7)
    for i in range(2):
        ref = linear_model.Ridge(alpha=0.7).fit(Z.numpy(), y[i].numpy(), sample_weight=w.numpy())
        torch.testing.assert_close(beta[i], torch.from_numpy(ref.coef_), rtol=1e-8, atol=1e-10)
        assert abs(float(b[i]) - float(ref.intercept_)) < 1e-9


def test_lime_linear_model(x):
    labels = grid_segments(H, W, 9)
    signed = torch.tensor([-2.0, -1.5, -1.0, -0.5, 0.5, 1.0, 1.5, 2.0, 2.5], dtype=torch.float64)
    weights = signed[torch.randperm(9)].expand(3, 9)
    model = SuperpixelLinear(labels, weights)
    true = weights[TARGET] * model.means(x)
    # weighted least squares on an additive game: the exact contributions
    exact = attribute(model, x, TARGET, "lime", segments=labels, alpha=0.0, num_samples=200, seed=1)
    torch.testing.assert_close(per_superpixel(exact, labels), true, rtol=0, atol=1e-8)
    # the default ridge penalty shrinks, but keeps every sign and the ranking
    ridge = per_superpixel(
        attribute(model, x, TARGET, "lime", segments=labels, num_samples=500, seed=1), labels
    )
    assert torch.equal(ridge.sign(), true.sign())
    assert torch.equal(ridge.argsort(1), true.argsort(1))


@pytest.mark.parametrize("method", ["kernel_shap", "lime"])
def test_seeded_and_batch_independent_with_slic(make_tiny_cnn: type[nn.Module], method):
    model = make_tiny_cnn(in_channels=3, classes=3).double().eval()
    # smooth images (SLIC merges the tiny fragments it finds in pixel noise)
    x = F.interpolate(torch.rand(3, 3, 4, 4, dtype=torch.float64), size=(12, 12), mode="bilinear")
    labels = [len(torch.unique(slic_segments(img, 12))) for img in x]
    assert min(labels) > 4, labels
    opts = {"n_segments": 12, "num_samples": 40, "exact": False} if method == "kernel_shap" else {
        "n_segments": 12, "num_samples": 40}  # fmt: skip
    first = attribute(model, x, None, method, seed=5, internal_batch_size=7, **opts)
    again = attribute(model, x, None, method, seed=5, **opts)
    torch.testing.assert_close(first, again, rtol=0, atol=1e-12)
    alone = attribute(model, x[2:], None, method, seed=5, **opts)
    torch.testing.assert_close(alone[0], first[2], rtol=0, atol=1e-12)
    other = attribute(model, x, None, method, seed=6, **opts)
    assert not torch.equal(first, other)


def test_superpixel_mean_fill(x):
    labels = grid_segments(H, W, 4).flatten().expand(3, -1)
    fill = fill_baseline(x, labels, "superpixel_mean")
    for j in range(4):
        region = (labels[0] == j).view(H, W)
        expected = x[:, :, region].mean(-1)
        torch.testing.assert_close(fill[:, :, region], expected[..., None].expand(-1, -1, 16))


def test_bad_options(make_tiny_cnn: type[nn.Module], x):
    model = make_tiny_cnn(in_channels=2, classes=3).double().eval()
    with pytest.raises(ValueError, match="segments"):
        attribute(model, x, TARGET, "lime", segments="quickshift")
    with pytest.raises(ValueError, match="segments must have shape"):
        attribute(model, x, TARGET, "lime", segments=torch.zeros(5, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="integer label"):
        attribute(model, x, TARGET, "lime", segments=torch.zeros(H, W))
    with pytest.raises(ValueError, match="baseline"):
        attribute(model, x, TARGET, "kernel_shap", baseline="noise")
    with pytest.raises(ValueError, match="num_samples"):
        attribute(model, x, TARGET, "kernel_shap", num_samples=0)
    with pytest.raises(ValueError, match="exact=False"):
        attribute(model, x, TARGET, "kernel_shap", segments="grid", n_segments=25, exact=True)
    with pytest.raises(ValueError, match="distance"):
        attribute(model, x, TARGET, "lime", distance="manhattan")


def test_both_methods_share_the_options_and_their_checks():
    """Kernel SHAP and LIME take the same shared options with the same defaults and checks;
    each keeps its own (exact; kernel_width, distance, alpha)."""
    shap, lime = KernelShap(), Lime()
    shared = ("segments", "n_segments", "baseline", "num_samples", "internal_batch_size",
              "memory_budget", "seed", "slic_options", "blur_sigma", "eval_mode")  # fmt: skip
    assert {k: getattr(shap, k) for k in shared} == {k: getattr(lime, k) for k in shared}
    for cls in (KernelShap, Lime):
        with pytest.raises(ValueError, match="n_segments must be a positive int"):
            cls(n_segments=0)
        with pytest.raises(ValueError, match="memory budget"):
            cls(memory_budget="lots")
        with pytest.raises(ValueError, match="blur_sigma"):
            cls(blur_sigma=0)
        with pytest.raises(TypeError, match="unexpected keyword argument 'kernal_width'"):
            cls(kernal_width=0.3)
    with pytest.raises(TypeError, match="'exact'"):
        Lime(exact=True)
