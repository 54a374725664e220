"""Occlusion vs a slow reference written from Zeiler & Fergus 2014 (one window at a time)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rightfocus import METHODS, attribute
from rightfocus.attribution.perturbation import Occlusion, occlusion_windows


def reference_occlusion(model, x, target, window, strides, baseline):
    """Slide a (c, h, w) window; A_p = mean over windows covering p of S(x) - S(x occluded)."""
    C, H, W = x.shape[1:]
    wc, wh, ww = window
    sc, sh, sw = strides
    out = torch.zeros_like(x)
    for i in range(x.shape[0]):
        s0 = model(x[i : i + 1])[0, target[i]]
        total = torch.zeros_like(x[i])
        count = torch.zeros_like(x[i])
        c = 0
        while True:
            h = 0
            while True:
                w = 0
                while True:
                    occluded = x[i].clone()
                    region = (slice(c, c + wc), slice(h, h + wh), slice(w, w + ww))
                    occluded[region] = baseline
                    drop = s0 - model(occluded[None])[0, target[i]]
                    total[region] += drop
                    count[region] += 1
                    if w + ww >= W:
                        break
                    w += sw
                if h + wh >= H:
                    break
                h += sh
            if c + wc >= C:
                break
            c += sc
        out[i] = total / count
    return out


@pytest.fixture
def model(make_tiny_cnn: type[nn.Module]) -> nn.Module:
    return make_tiny_cnn(in_channels=2, classes=4).double().eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(3, 2, 7, 8, dtype=torch.float64)


@pytest.mark.parametrize(
    ("window", "strides", "full_window", "full_strides"),
    [
        ((3, 3), (1, 1), (2, 3, 3), (2, 1, 1)),
        ((3, 4), (2, 3), (2, 3, 4), (2, 2, 3)),
        ((1, 2, 2), (1, 2, 2), (1, 2, 2), (1, 2, 2)),
        (2, 1, (2, 2, 2), (1, 1, 1)),
    ],
)
def test_occlusion_matches_reference(model, x, window, strides, full_window, full_strides):
    target = torch.tensor([0, 3, 2])
    with torch.no_grad():
        ref = reference_occlusion(model, x, target, full_window, full_strides, -0.5)
    got = attribute(model, x, target, "occlusion", window=window, strides=strides, baseline=-0.5)
    torch.testing.assert_close(got, ref)


def test_default_strides_are_half_the_window(model, x):
    got = Occlusion(window=(4, 4))(model, x, 1)
    with torch.no_grad():
        ref = reference_occlusion(model, x, torch.tensor([1, 1, 1]), (2, 4, 4), (2, 2, 2), 0.0)
    torch.testing.assert_close(got, ref)


@pytest.mark.parametrize("per_eval", [1, 2, 7, 1000])
def test_perturbations_per_eval_gives_same_result(model, x, per_eval):
    full = attribute(model, x, 1, "occlusion", window=(3, 3), strides=(2, 2))
    got = attribute(
        model, x, 1, "occlusion", window=(3, 3), strides=(2, 2), perturbations_per_eval=per_eval
    )
    torch.testing.assert_close(got, full, rtol=1e-12, atol=1e-14)


def test_window_geometry_covers_every_pixel():
    windows = occlusion_windows((1, 7, 8), (1, 3, 3), (1, 2, 2))
    cover = torch.zeros(1, 7, 8)
    for sl in windows:
        cover[sl] += 1
    assert len(windows) == 3 * 4  # ceil((7-3)/2)+1 rows, ceil((8-3)/2)+1 cols
    assert bool((cover >= 1).all())
    assert cover[0, 6, 7] == 1  # the last window is cut at the border


def test_occlusion_is_model_agnostic_and_builds_no_graph(x):
    class NonDifferentiable(nn.Module):
        def forward(self, v: torch.Tensor) -> torch.Tensor:
            # rounding has zero gradient everywhere; occlusion only needs forward passes
            return torch.stack([v.round().sum((1, 2, 3)), v.sum((1, 2, 3))], dim=1).detach()

    model = NonDifferentiable()
    got = attribute(model, x, 1, "occlusion", window=(1, 1), strides=(1, 1))
    # with 1x1 windows over all channels the drop for the linear score is the pixel's sum
    torch.testing.assert_close(got, x.sum(1, keepdim=True).expand_as(x))
    assert not got.requires_grad
    assert METHODS.metadata("occlusion")["model_agnostic"] is True
    assert METHODS.metadata("occlusion")["differentiable"] is False


def test_callable_target_and_predicted_class(model, x):
    def score1(out: torch.Tensor) -> torch.Tensor:
        return out[:, 1]

    torch.testing.assert_close(
        attribute(model, x, score1, "occlusion", window=(3, 3)),
        attribute(model, x, 1, "occlusion", window=(3, 3)),
    )
    pred = model(x).argmax(1)
    torch.testing.assert_close(
        attribute(model, x, None, "occlusion", window=(3, 3)),
        attribute(model, x, pred, "occlusion", window=(3, 3)),
    )


def test_bad_options(model, x):
    with pytest.raises(ValueError, match="larger than the image"):
        attribute(model, x, 0, "occlusion", window=(9, 3))
    with pytest.raises(ValueError, match="never occluded"):
        attribute(model, x, 0, "occlusion", window=(2, 2), strides=(3, 3))
    with pytest.raises(ValueError, match="window must be"):
        Occlusion(window=(0, 3))
    with pytest.raises(ValueError, match="window must be"):
        Occlusion(window=(1, 2, 3, 4))
    with pytest.raises(ValueError, match="strides must be"):
        Occlusion(strides=(1.5, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="perturbations_per_eval"):
        Occlusion(perturbations_per_eval=0)
    with pytest.raises(ValueError, match="cannot be broadcast"):
        attribute(model, x, 0, "occlusion", window=(3, 3), baseline=torch.zeros(5, 5))
