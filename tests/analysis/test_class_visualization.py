"""Class model visualisation (Simonyan et al. 2014) on a tiny CNN trained on real digits."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rightfocus.analysis import class_visualization
from rightfocus.analysis.class_visualization import _gaussian_blur
from rightfocus.hooks import count_hooks
from rightfocus.viz.class_viz import class_visualization_figure


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    # Two shared cores: intra-op threads contend and make these tiny models ~50x slower.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def digits_net() -> nn.Module:
    """A tiny CNN trained for ~0.1 s on 1,000 of sklearn's real 8x8 digits (float64, eval)."""
    from sklearn.datasets import load_digits

    x_np, y_np = load_digits(return_X_y=True)
    x = torch.tensor(x_np, dtype=torch.float32).view(-1, 1, 8, 8) / 16
    y = torch.tensor(y_np)
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 10)
    )
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(60):
        loss = F.cross_entropy(net(x[:1000]), y[:1000])
        opt.zero_grad()
        loss.backward()
        opt.step()
    accuracy = (net(x[1000:]).argmax(1) == y[1000:]).double().mean().item()
    assert accuracy > 0.85, f"the digits model did not train (held-out accuracy {accuracy:.2f})"
    return net.double().eval()


def test_objective_increases_and_the_class_wins(digits_net: nn.Module) -> None:
    out = class_visualization(digits_net, list(range(10)), (1, 8, 8), steps=100, lr=0.01, l2=0.05)
    assert out.images.shape == (10, 1, 8, 8)
    assert out.objective.shape == out.score.shape == (101, 10)
    assert bool((out.objective.diff(dim=0) > 0).all()), "objective must rise at every step"
    assert out.logits.argmax(1).tolist() == list(range(10))
    # The history is the stated objective: logit of c minus λ||I||², on the final images too.
    logits = digits_net(out.images).detach()
    torch.testing.assert_close(out.score[-1], logits[torch.arange(10), out.classes])
    penalty = 0.05 * out.images.pow(2).flatten(1).sum(1)
    torch.testing.assert_close(out.objective[-1], out.score[-1] - penalty)
    assert bool((out.objective[0] == out.score[0]).all())  # zero image: no penalty


def _reference(model: nn.Module, c: int, steps: int, lr: float, l2: float) -> torch.Tensor:
    """One class at a time, from the paper: I <- I + lr * d(S_c(I) - λ||I||²)/dI, I_0 = 0."""
    image = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    for _ in range(steps):
        image.requires_grad_(True)
        objective = model(image)[0, c] - l2 * (image**2).sum()
        (grad,) = torch.autograd.grad(objective, image)
        image = (image + lr * grad).detach()
    return image[0]


def test_batched_equals_per_class_reference(digits_net: nn.Module) -> None:
    classes = [3, 7, 3, 0]
    out = class_visualization(digits_net, torch.tensor(classes), (1, 8, 8), steps=15, lr=0.05)
    for k, c in enumerate(classes):
        expected = _reference(digits_net, c, steps=15, lr=0.05, l2=1e-3)
        torch.testing.assert_close(out.images[k], expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_linear_model_reaches_the_closed_form_optimum(optimizer: str) -> None:
    # S(I) = W vec(I) + b, so argmax_I S_c(I) - λ||I||² = w_c / (2λ).
    linear = nn.Linear(12, 5).double()
    model = nn.Sequential(nn.Flatten(), linear)
    out = class_visualization(model, [4, 1], (3, 2, 2), 400, lr=0.05, l2=0.5, optimizer=optimizer)
    expected = linear.weight.detach()[[4, 1]].view(2, 3, 2, 2) / (2 * 0.5)
    torch.testing.assert_close(out.images, expected, atol=1e-6, rtol=0)


def test_seeded_determinism_and_regularisers(digits_net: nn.Module) -> None:
    options: dict[str, Any] = dict(
        steps=20,
        lr=0.05,
        optimizer="adam",
        init="noise",
        jitter=2,
        blur_every=4,
        blur_sigma=0.7,
        clamp=(-1.0, 1.0),
    )
    rng = torch.get_rng_state()
    first = class_visualization(digits_net, [2, 5], (1, 8, 8), seed=3, **options)
    again = class_visualization(digits_net, [2, 5], (1, 8, 8), seed=3, **options)
    other = class_visualization(digits_net, [2, 5], (1, 8, 8), seed=4, **options)
    assert torch.equal(torch.get_rng_state(), rng), "the global random state must not be used"
    assert torch.equal(first.images, again.images)
    assert torch.equal(first.objective, again.objective)
    assert not torch.allclose(first.images, other.images)
    assert float(first.images.abs().max()) <= 1.0


def test_model_flags_and_modes_are_restored(digits_net: nn.Module) -> None:
    model = copy.deepcopy(digits_net).train()
    model[0].bias.requires_grad_(False)
    model[3].eval()
    modes = [m.training for m in model.modules()]
    grads = [p.requires_grad for p in model.parameters()]
    class_visualization(model, [1], (1, 8, 8), steps=3)
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == grads
    assert all(p.grad is None for p in model.parameters()), "no parameter gradient accumulates"
    assert count_hooks(model) == 0

    class Boom(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    broken = nn.Sequential(model, Boom())
    modes = [m.training for m in broken.modules()]
    with pytest.raises(RuntimeError, match="boom"):
        class_visualization(broken, [1], (1, 8, 8), steps=3)
    assert [m.training for m in broken.modules()] == modes
    assert [p.requires_grad for p in broken.parameters()] == grads


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"classes": [10]}, ValueError, r"out of range.*10 classes.*\[0, 9\]"),
        ({"classes": [-1]}, ValueError, ">= 0"),
        ({"classes": []}, ValueError, "empty"),
        ({"classes": [1.5]}, TypeError, "ints"),
        ({"classes": torch.tensor([0.0])}, TypeError, "integer tensor"),
        ({"input_shape": (8, 8)}, ValueError, r"\(C, H, W\)"),
        ({"input_shape": (1, 0, 8)}, ValueError, "positive"),
        ({"steps": 0}, ValueError, "steps"),
        ({"lr": math.nan}, ValueError, "lr"),
        ({"lr": -0.1}, ValueError, "lr"),
        ({"l2": math.inf}, ValueError, "l2"),
        ({"optimizer": "lbfgs"}, ValueError, "optimizer"),
        ({"init": "mean"}, ValueError, "init"),
        ({"jitter": -1}, ValueError, "jitter"),
        ({"blur_every": -2}, ValueError, "blur_every"),
        ({"blur_sigma": 0.0}, ValueError, "blur_sigma"),
        ({"clamp": (1.0, 0.0)}, ValueError, "lo < hi"),
    ],
)
def test_bad_inputs_raise_clear_errors(
    digits_net: nn.Module, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    args: dict[str, Any] = {"classes": [0], "input_shape": (1, 8, 8), "steps": 2}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        class_visualization(digits_net, **args)


def test_non_module_and_non_logit_models_are_refused() -> None:
    with pytest.raises(TypeError, match=r"nn\.Module"):
        class_visualization(lambda x: x, [0], (1, 2, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(B, num_classes\)"):
        class_visualization(nn.Identity(), [0], (1, 2, 2))


def test_blur_is_a_normalised_gaussian_with_reflect_padding() -> None:
    images = torch.rand(2, 3, 9, 9, dtype=torch.float64)
    sigma = 0.8
    radius = 3  # ceil(3 * 0.8)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(3, 1, -1, -1)
    padded = F.pad(images, (radius,) * 4, mode="reflect")
    expected = F.conv2d(padded, kernel, groups=3)
    torch.testing.assert_close(_gaussian_blur(images, sigma), expected)
    # Kernel truncated to min(H, W) - 1 on tiny images; constants stay constant.
    flat = torch.full((1, 1, 3, 3), 0.25, dtype=torch.float64)
    torch.testing.assert_close(_gaussian_blur(flat, 5.0), flat)


def test_figure_is_written(tmp_path: Path, digits_net: nn.Module) -> None:
    out = class_visualization(digits_net, [0, 1, 2], (1, 8, 8), steps=3)
    path = class_visualization_figure(out.images, ["0", "1", "2"], tmp_path / "f" / "cv.png", 2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["cv.png"]  # no temporary file left
    with pytest.raises(ValueError, match="one label per image"):
        class_visualization_figure(out.images, ["0"], tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"\(K, 1 or 3, H, W\)"):
        class_visualization_figure(out.images[0], ["0"], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
