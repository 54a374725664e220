"""Noise tunnel (SmoothGrad, SmoothGrad², VarGrad) vs a per-sample, per-draw reference loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rightfocus import METHODS, attribute
from rightfocus.attribution.gradient import Saliency
from rightfocus.attribution.smoothing import NoiseTunnel, SmoothGrad, VarGrad


@pytest.fixture
def model(make_tiny_cnn: type[nn.Module]) -> nn.Module:
    return make_tiny_cnn(in_channels=2, classes=4).double().eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(3, 2, 6, 6, dtype=torch.float64) * 4 - 1


def reference(model, x, target, kind, noise, base="saliency", **opts):
    """Smilkov et al. 2017 / Adebayo et al. 2018 written out: one image, one draw at a time."""
    out = []
    for i in range(x.shape[0]):
        attrs = [
            attribute(model, (x[i] + noise[s, min(i, noise.shape[1] - 1)])[None],
                      target[i : i + 1], base, **opts)[0]
            for s in range(noise.shape[0])
        ]  # fmt: skip
        stack = torch.stack(attrs)
        mean = stack.mean(0)
        if kind == "smoothgrad":
            out.append(mean)
        elif kind == "smoothgrad_sq":
            out.append((stack**2).mean(0))
        else:
            out.append(((stack - mean) ** 2).sum(0) / stack.shape[0])
    return torch.stack(out)


@pytest.mark.parametrize("kind", ["smoothgrad", "smoothgrad_sq", "vargrad"])
@pytest.mark.parametrize("relative", [True, False])
def test_noise_tunnel_matches_reference_loop(model, x, kind, relative):
    target = torch.tensor([0, 3, 1])
    nt = NoiseTunnel("saliency", kind=kind, n_samples=5, stdev=0.3, relative=relative, seed=4)
    noise = nt.noise(x)
    ref = reference(model, x, target, kind, noise)
    torch.testing.assert_close(nt(model, x, target), ref)
    # the registered names are the same computation
    got = attribute(model, x, target, kind, n_samples=5, stdev=0.3, relative=relative, seed=4)
    torch.testing.assert_close(got, ref)


def test_noise_scale_is_relative_to_each_images_range(x):
    x = x.clone()
    x[1] *= 10.0
    noise = NoiseTunnel(n_samples=4000, stdev=0.2, seed=0).noise(x)
    span = x.flatten(1).amax(1) - x.flatten(1).amin(1)
    std = noise.flatten(2).std(dim=(0, 2))
    torch.testing.assert_close(std, 0.2 * span, rtol=0.02, atol=0.0)
    absolute = NoiseTunnel(n_samples=4000, stdev=0.2, relative=False, seed=0).noise(x)
    assert absolute.shape[1] == 1
    assert float(absolute.std()) == pytest.approx(0.2, rel=0.02)


def test_noise_is_batch_independent_and_seeded(x):
    nt = NoiseTunnel(n_samples=3, stdev=0.1, seed=7)
    full = nt.noise(x)
    alone = nt.noise(x[2:3])
    torch.testing.assert_close(full[:, 2], alone[:, 0])
    torch.testing.assert_close(nt.noise(x), full)
    assert not torch.allclose(NoiseTunnel(n_samples=3, stdev=0.1, seed=8).noise(x), full)


def test_unseeded_noise_follows_torch_manual_seed(model, x):
    torch.manual_seed(5)
    a = attribute(model, x, 0, "smoothgrad", n_samples=3)
    torch.manual_seed(5)
    b = attribute(model, x, 0, "smoothgrad", n_samples=3)
    c = attribute(model, x, 0, "smoothgrad", n_samples=3)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("kind", ["smoothgrad", "smoothgrad_sq", "vargrad"])
@pytest.mark.parametrize("ibs", [1, 3, 4, 8, 1000])
def test_internal_batch_size_gives_same_result(model, x, kind, ibs):
    opts = {"n_samples": 7, "seed": 1, "kind": kind}
    full = NoiseTunnel(**opts)(model, x, 2)
    torch.testing.assert_close(NoiseTunnel(internal_batch_size=ibs, **opts)(model, x, 2), full)


def test_smoothgrad_over_gradcam(model, x):
    got = attribute(model, x, None, "smoothgrad", base="gradcam", n_samples=8, seed=0)
    assert got.shape == (3, 1, 6, 6)
    pred = model(x).argmax(1)
    nt = NoiseTunnel("gradcam", n_samples=8, seed=0)
    ref = reference(model, x, pred, "smoothgrad", nt.noise(x), base="gradcam")
    torch.testing.assert_close(got, ref)


def test_target_none_is_the_clean_prediction(model, x):
    pred = model(x).argmax(1)
    torch.testing.assert_close(
        attribute(model, x, None, "vargrad", n_samples=4, stdev=1.0, seed=2),
        attribute(model, x, pred, "vargrad", n_samples=4, stdev=1.0, seed=2),
    )


def test_callable_target(model, x):
    def logit2(out: torch.Tensor) -> torch.Tensor:
        return out[:, 2]

    torch.testing.assert_close(
        attribute(model, x, logit2, "smoothgrad", n_samples=4, seed=2),
        attribute(model, x, 2, "smoothgrad", n_samples=4, seed=2),
    )


def test_base_options_and_instances(model, x):
    by_name = attribute(
        model, x, 1, "smoothgrad_sq", base="saliency", abs=True, n_samples=3, seed=0
    )
    inst = NoiseTunnel(Saliency(abs=True), kind="smoothgrad_sq", n_samples=3, seed=0)
    torch.testing.assert_close(inst(model, x, 1), by_name)
    ig = attribute(model, x, 1, "smoothgrad", base="integrated_gradients", n_steps=4,
                   n_samples=2, seed=0)  # fmt: skip
    assert ig.shape == x.shape
    nested = NoiseTunnel(SmoothGrad(n_samples=2, seed=1), n_samples=2, seed=0)(model, x, 1)
    assert nested.shape == x.shape
    occ = attribute(model, x, 1, "vargrad", base="occlusion", window=(3, 3), n_samples=2, seed=0)
    assert occ.shape == x.shape and bool((occ >= 0).all())


def test_zero_noise_recovers_the_base_method(model, x):
    sal = attribute(model, x, 1, "saliency")
    torch.testing.assert_close(attribute(model, x, 1, "smoothgrad", n_samples=3, stdev=0.0), sal)
    torch.testing.assert_close(
        attribute(model, x, 1, "vargrad", n_samples=3, stdev=0.0), torch.zeros_like(sal)
    )


def test_create_graph_gives_parameter_gradients(model, x):
    attr = VarGrad(n_samples=3, seed=0, create_graph=True)(model, x, 1)
    grads = torch.autograd.grad(attr.sum(), list(model.parameters()), allow_unused=True)
    assert any(g is not None and bool(g.abs().sum() > 0) for g in grads)


def test_bad_options():
    with pytest.raises(ValueError, match="kind must be one of"):
        NoiseTunnel(kind="smooth")
    with pytest.raises(ValueError, match="n_samples"):
        SmoothGrad(n_samples=0)
    with pytest.raises(ValueError, match="stdev"):
        SmoothGrad(stdev=-1.0)
    with pytest.raises(ValueError, match="internal_batch_size"):
        SmoothGrad(internal_batch_size=0)
    with pytest.raises(ValueError, match="Unknown attribution method 'salency'"):
        SmoothGrad(base="salency")
    with pytest.raises(ValueError, match="fixes kind"):
        VarGrad(kind="smoothgrad")
    with pytest.raises(ValueError, match="differentiable base method"):
        SmoothGrad(base="occlusion", create_graph=True)
    with pytest.raises(ValueError, match="Options"):
        NoiseTunnel(Saliency(), abs=True)
    with pytest.raises(TypeError, match="registered name or an Attribution"):
        NoiseTunnel(42)  # type: ignore[arg-type]


def test_base_returning_a_tuple_is_refused(model, x):
    with pytest.raises(ValueError, match="return_delta"):
        attribute(model, x, 0, "smoothgrad", base="integrated_gradients", return_delta=True,
                  n_steps=2, n_samples=2)  # fmt: skip


def test_registered_with_capabilities():
    for name in ("smoothgrad", "smoothgrad_sq", "vargrad"):
        meta = METHODS.metadata(name)
        assert meta["stochastic"] is True
        assert meta["differentiable"] is True
