"""The attribution contract, checked for EVERY registered method (DESIGN.md, "Core contracts").

Methods registered later are picked up automatically; what a method can do is read from its
capability attributes (``differentiable``, ``needs_layer``, ``model_agnostic``, ``stochastic``,
``output``), never from its name. Expensive defaults are made cheap by :func:`options`: known
cost knobs (``n_steps``, ``n_samples``, ...) that a constructor names explicitly are lowered,
and :data:`FAST` holds per-method overrides for the rest.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch
from torch import nn

import rightfocus
from rightfocus import METHODS, hooks

# Methods that read a transformer's attention (``needs_attention``) cannot run on a CNN; the
# same contract runs for them on a tiny ViT in tests/families/test_family_matrix.py.
NAMES = [n for n in METHODS.names() if not getattr(METHODS.get(n), "needs_attention", False)]

# Cost knobs lowered for any method whose constructor names them explicitly.
CHEAP: dict[str, Any] = {"n_steps": 4, "n_samples": 3, "n_masks": 8, "num_samples": 8}
# Per-method overrides (only where the generic knobs are not enough).
FAST: dict[str, dict[str, Any]] = {
    "occlusion": {"window": (4, 4), "strides": (3, 3)},
    # DeepSHAP needs a reference distribution (deterministic, matching ContractCNN's input)
    "deepshap": {"baselines": torch.linspace(0, 1, 600, dtype=torch.float64).view(2, 3, 10, 10)},
    "kernel_shap": {"n_segments": 9},
    "lime": {"n_segments": 9},
}


class BoomError(RuntimeError):
    """Raised from inside the model's forward to test exception safety."""


class ContractCNN(nn.Module):
    """Two convs with nn.ReLU modules, global average pool + linear head (works for CAM too).

    ``fail_at = k`` makes the k-th forward call raise :class:`BoomError`; ``calls`` counts them.
    """

    def __init__(self, in_channels: int = 3, classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 6, 3, padding=1),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, classes)
        self.calls = 0
        self.fail_at: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise BoomError("failure inside the model's forward")
        return self.fc(self.pool(self.features(x)).flatten(1))


def options(name: str, **extra: Any) -> dict[str, Any]:
    cls = METHODS.get(name)
    params = inspect.signature(cls.__init__).parameters
    opts = {k: v for k, v in CHEAP.items() if k in params}
    opts.update(FAST.get(name, {}))
    if cls.stochastic:
        opts["seed"] = 0
    opts.update(extra)
    return opts


def make(name: str, **extra: Any) -> rightfocus.Attribution:
    return METHODS.get(name)(**options(name, **extra))


def model_and_batch(
    dtype: torch.dtype = torch.float64, device: str = "cpu", batch: int = 8
) -> tuple[ContractCNN, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = ContractCNN().to(device=device, dtype=dtype).eval()
    x = torch.rand(batch, 3, 10, 10, dtype=dtype, device=device)
    target = torch.randint(0, 4, (batch,), device=device)
    return model, x, target


def expected_channels(name: str, x: torch.Tensor) -> set[int]:
    cls = METHODS.get(name)
    if cls.output == "map":
        return {1}
    return {x.shape[1]}


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", NAMES)
def test_output_shape_dtype_device(name, dtype, device):
    model, x, target = model_and_batch(dtype, device, batch=3)
    attr = make(name)(model, x, target)
    assert isinstance(attr, torch.Tensor), f"{name} returned {type(attr).__name__}"
    B, _, H, W = x.shape
    assert attr.shape[0] == B and tuple(attr.shape[2:]) == (H, W), tuple(attr.shape)
    assert attr.dim() == 4 and attr.shape[1] in expected_channels(name, x), tuple(attr.shape)
    assert attr.dtype == dtype
    assert attr.device == x.device
    assert bool(torch.isfinite(attr).all())


@pytest.mark.parametrize("name", NAMES)
def test_seeded_determinism(name):
    model, x, target = model_and_batch(batch=3)
    first = make(name)(model, x, target)
    torch.manual_seed(123)  # a seeded method must not depend on the global generator
    second = make(name)(model, x, target)
    torch.testing.assert_close(first, second, rtol=0, atol=0)


@pytest.mark.parametrize("target_kind", ["tensor", "none"])
@pytest.mark.parametrize("name", NAMES)
def test_batch_independence(name, target_kind):
    model, x, target = model_and_batch(batch=8)
    method = make(name)
    full = method(model, x, target if target_kind == "tensor" else None)
    for i in (0, 5, 7):
        alone = method(model, x[i : i + 1], target[i : i + 1] if target_kind == "tensor" else None)
        scale = float(full[i].abs().max()) + 1e-12
        torch.testing.assert_close(alone[0], full[i], rtol=1e-7, atol=1e-9 * scale)


def _state(model: nn.Module) -> tuple[list[bool], list[bool]]:
    return [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]


def _mixed_mode_model() -> tuple[ContractCNN, torch.Tensor, torch.Tensor]:
    model, x, target = model_and_batch(batch=2)
    model.train()
    model.features[1].eval()  # a deliberate mix of flags that must come back as it was
    model.fc.bias.requires_grad_(False)
    return model, x, target


@pytest.mark.parametrize("name", NAMES)
def test_model_restored_after_a_normal_call(name):
    model, x, target = _mixed_mode_model()
    before = _state(model)
    attr = make(name)(model, x, target)
    assert hooks.count_hooks(model) == 0
    assert _state(model) == before
    # without create_graph nothing is kept for the parameters
    assert not attr.requires_grad
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("when", ["first", "last"])
@pytest.mark.parametrize("name", NAMES)
def test_model_restored_after_an_exception_in_forward(name, when):
    model, x, target = _mixed_mode_model()
    make(name)(model, x, target)
    n_calls = model.calls
    before = _state(model)
    model.calls = 0
    model.fail_at = 1 if when == "first" else n_calls
    with pytest.raises(BoomError):
        make(name)(model, x, target)
    assert hooks.count_hooks(model) == 0
    assert _state(model) == before


DIFFERENTIABLE = [n for n in NAMES if METHODS.get(n).differentiable]


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_create_graph_gives_parameter_gradients(name):
    model, x, target = model_and_batch(batch=4)
    attr = make(name, create_graph=True)(model, x, target)
    assert attr.requires_grad, f"{name}: create_graph=True returned a detached tensor"
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(attr.pow(2).sum(), params, allow_unused=True)
    total = sum(float(g.abs().sum()) for g in grads if g is not None)
    assert total > 0, f"{name}: no parameter receives a gradient"


NOT_DIFFERENTIABLE = [n for n in NAMES if not METHODS.get(n).differentiable]


@pytest.mark.parametrize("name", NOT_DIFFERENTIABLE)
def test_non_differentiable_methods_refuse_create_graph(name):
    with pytest.raises((TypeError, ValueError)):
        METHODS.get(name)(**options(name, create_graph=True))


@pytest.mark.parametrize("name", NAMES)
def test_several_targets_equal_separate_calls(name):
    """A (B, K) class target gives (B, K, ...) = the K single-target calls, stacked; a list of
    class lists is the same call."""
    model, x, _ = model_and_batch(batch=3)
    targets = torch.tensor([[0, 2, 3], [1, 1, 0], [3, 0, 2]])
    method = make(name)
    multi = method(model, x, targets)
    separate = torch.stack([method(model, x, targets[:, k]) for k in range(3)], dim=1)
    assert multi.shape == separate.shape, (tuple(multi.shape), tuple(separate.shape))
    scale = float(separate.abs().max()) + 1e-12
    torch.testing.assert_close(multi, separate, rtol=1e-7, atol=1e-9 * scale)
    torch.testing.assert_close(method(model, x, targets.tolist()), multi, rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_several_targets_share_the_forward_passes(name, monkeypatch):
    """K targets in one call run the model as often as one target does: gradient methods batch
    the K backward passes, perturbation methods score every model call for all K targets."""
    # no activation measurement (an extra forward whose occurrence depends on free memory)
    monkeypatch.setenv("RIGHTFOCUS_MEMORY_BUDGET", "1024GB")
    model, x, _ = model_and_batch(batch=3)
    targets = torch.tensor([[0, 2, 3], [1, 1, 0], [3, 0, 2]])
    method = make(name)
    model.calls = 0
    method(model, x, targets[:, 0])
    single = model.calls
    model.calls = 0
    method(model, x, targets)
    assert model.calls == single, (
        f"{name}: {model.calls} forward passes for 3 targets, {single} for 1"
    )


@pytest.mark.parametrize("name", NAMES)
def test_several_targets_on_a_multi_label_model(name):
    """Sigmoid (multi-label) outputs: each sample's positive classes in one call."""
    model, x, _ = model_and_batch(batch=2)
    multilabel = nn.Sequential(model, nn.Sigmoid()).eval()
    if name == "cam":
        pytest.skip("CAM needs the Linear head to produce the outputs (no sigmoid after it)")
    labels = [[0, 3], [2, 1]]
    attr = make(name)(multilabel, x, labels)
    assert attr.shape[:2] == (2, 2) and bool(torch.isfinite(attr).all())
    single = make(name)(multilabel, x[1:], torch.tensor([1]))
    scale = float(single.abs().max()) + 1e-12
    torch.testing.assert_close(attr[1, 1], single[0], rtol=1e-7, atol=1e-9 * scale)


def test_ragged_class_lists_are_refused():
    model, x, _ = model_and_batch(batch=2)
    with pytest.raises(ValueError, match="same number of target classes"):
        make("saliency")(model, x, [[0, 1], [2]])
