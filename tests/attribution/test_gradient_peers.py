"""Gradient family, occlusion and the noise tunnel vs Captum's numbers (float64, 1e-5 relative).

Where Captum differs on purpose:
- ``Saliency`` takes ``|grad|`` by default (``abs=True``); ours returns the raw gradient by
  default and ``abs=True`` matches Captum's default.
- Captum's ``riemann_trapezoid`` uses weights ``1/n`` (halved at the ends), which sum to
  ``(n - 1)/n``; ours uses the trapezoid rule on ``n`` equispaced nodes, weights ``1/(n - 1)``,
  so ours is Captum's times ``n / (n - 1)``.
- Captum's ``Occlusion`` returns float32 even for float64 inputs (it divides ``.float()``).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

captum_attr = pytest.importorskip("captum.attr")


from rightfocus import attribute  # noqa: E402
from rightfocus.attribution.smoothing import noise_tunnel  # noqa: E402

RTOL = 1e-5
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(
        a, b.detach().to(a.dtype), rtol=RTOL, atol=RTOL * float(b.abs().max()), check_dtype=False
    )


@pytest.fixture
def model(make_tiny_cnn: type[nn.Module]) -> nn.Module:
    return make_tiny_cnn(in_channels=3, classes=5).double().eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(3, 3, 9, 9, dtype=torch.float64)


@pytest.fixture
def target() -> torch.Tensor:
    return torch.tensor([4, 0, 2])


def test_saliency_vs_captum(model, x, target):
    sal = captum_attr.Saliency(model)
    close(attribute(model, x, target, "saliency"), sal.attribute(x, target, abs=False))
    close(attribute(model, x, target, "saliency", abs=True), sal.attribute(x, target))


def test_input_x_gradient_vs_captum(model, x, target):
    ref = captum_attr.InputXGradient(model).attribute(x, target)
    close(attribute(model, x, target, "input_x_gradient"), ref)


@pytest.mark.parametrize(
    "rule",
    ["riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre"],
)
@pytest.mark.parametrize("baseline_kind", ["zero", "number", "tensor"])
def test_integrated_gradients_vs_captum(model, x, target, rule, baseline_kind):
    baseline = {"zero": None, "number": 0.25, "tensor": torch.rand_like(x)}[baseline_kind]
    n = 16
    ours, delta = attribute(
        model, x, target, "integrated_gradients", baseline=baseline, n_steps=n,
        integration=rule, return_delta=True,
    )  # fmt: skip
    ig = captum_attr.IntegratedGradients(model)
    ref, ref_delta = ig.attribute(
        x, 0.0 if baseline is None else baseline, target, n_steps=n, method=rule,
        return_convergence_delta=True,
    )  # fmt: skip
    if rule == "riemann_trapezoid":
        ref = ref * n / (n - 1)
    else:
        close(delta, ref_delta)
    close(ours, ref)


def test_integrated_gradients_internal_batch_size_vs_captum(model, x, target):
    ours = attribute(model, x, target, "integrated_gradients", n_steps=10, internal_batch_size=7)
    ref = captum_attr.IntegratedGradients(model).attribute(
        x, target=target, n_steps=10, internal_batch_size=7
    )
    close(ours, ref)


@pytest.mark.parametrize(
    ("ours", "peer"),
    [("guided_backprop", "GuidedBackprop"), ("deconvnet", "Deconvolution")],
)
def test_relu_rule_methods_vs_captum(model, x, target, ours, peer):
    ref = getattr(captum_attr, peer)(model).attribute(x, target)
    close(attribute(model, x, target, ours), ref)


@pytest.mark.parametrize(
    ("window", "strides", "captum_window", "captum_strides"),
    [
        ((3, 3), (1, 1), (3, 3, 3), (3, 1, 1)),
        ((4, 4), (2, 3), (3, 4, 4), (3, 2, 3)),  # windows cut at the border
        ((1, 3, 2), (1, 2, 2), (1, 3, 2), (1, 2, 2)),  # per-channel windows
        (9, 9, (3, 9, 9), (1, 9, 9)),  # one window: the whole image
    ],
)
def test_occlusion_vs_captum(model, x, target, window, strides, captum_window, captum_strides):
    ours = attribute(
        model, x, target, "occlusion", window=window, strides=strides, baseline=0.3,
        perturbations_per_eval=5,
    )  # fmt: skip
    ref = captum_attr.Occlusion(model).attribute(
        x, captum_window, captum_strides, baselines=0.3, target=target, perturbations_per_eval=5
    )
    assert ours.dtype == torch.float64
    close(ours, ref)


def test_occlusion_tensor_baseline_vs_captum(model, x, target):
    base = torch.rand(3, 3, 9, 9, dtype=torch.float64)
    ours = attribute(model, x, target, "occlusion", window=(3, 3), strides=(2, 2), baseline=base)
    ref = captum_attr.Occlusion(model).attribute(
        x, (3, 3, 3), (3, 2, 2), baselines=base, target=target
    )
    close(ours, ref)


def _captum_noise(seed: int, x: torch.Tensor, n: int, stdev: float) -> torch.Tensor:
    """The noise Captum's NoiseTunnel draws after ``torch.manual_seed(seed)``, as (n, B, ...)."""
    torch.manual_seed(seed)
    B = x.shape[0]
    std = torch.tensor(stdev).repeat((B * n, *x.shape[1:]))
    noise = torch.normal(0, std)  # float32, B-major (repeat_interleave), as Captum
    return noise.view(B, n, *x.shape[1:]).transpose(0, 1).to(x.dtype)


@pytest.mark.parametrize("kind", ["smoothgrad", "smoothgrad_sq", "vargrad"])
@pytest.mark.parametrize("base", ["saliency", "integrated_gradients"])
def test_noise_tunnel_vs_captum(model, x, target, kind, base):
    n, stdev = 6, 0.4
    peer = {
        "saliency": captum_attr.Saliency,
        "integrated_gradients": captum_attr.IntegratedGradients,
    }
    opts = {"saliency": {"abs": False}, "integrated_gradients": {"n_steps": 8}}[base]
    torch.manual_seed(11)
    ref = captum_attr.NoiseTunnel(peer[base](model)).attribute(
        x, nt_type=kind, nt_samples=n, stdevs=stdev, target=target, **opts
    )
    noise = _captum_noise(11, x, n, stdev)
    method_opts = {} if base == "saliency" else {"n_steps": 8}

    def explain(images: torch.Tensor, tgt) -> torch.Tensor:
        return attribute(model, images, tgt, base, **method_opts)

    for ibs in (None, 6):  # all copies at once, and two copies per pass
        close(noise_tunnel(explain, x, noise, target, kind, internal_batch_size=ibs), ref)
