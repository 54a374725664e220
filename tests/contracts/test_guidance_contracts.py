"""The guidance contract, checked for EVERY registered guidance method.

Methods registered later are picked up automatically; what a method needs is read from its
registry metadata (``requires_mask``, ``requires_bayesian``, ``needs_input_grad``), never from
its name. Every method must: return named scalar loss terms (an empty dict is allowed, e.g. for
data-level methods), give the parameters a gradient through its terms, leave the model exactly
as it found it (weights, mode, hooks, patched forwards), honour its ``empty_masks`` policy and
compose with another method inside ``guided_forward``.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import pytest
import torch
from torch import nn

import rightfocus
from rightfocus import GUIDANCE
from rightfocus.bayes import to_bayesian
from rightfocus.guidance import Guidance, GuidedBatch, guided_forward

NAMES = GUIDANCE.names()


class BiasFreeCNN(nn.Module):
    """Two bias-free convs + ReLU, average pool, bias-free head: positively homogeneous (an
    X-DNN), so every method (X-Gradient priors included) accepts it."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(4, 5, 3, padding=1, bias=False),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(5, classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def make_model(name: str) -> nn.Module:
    model: nn.Module = BiasFreeCNN()
    if GUIDANCE.metadata(name)["requires_bayesian"]:
        model = to_bayesian(model, rho_init=-3.0, prior_sigma=0.1)
    return model.train()


def make_batch(n: int = 6, masked: bool = True) -> GuidedBatch:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = torch.arange(n) % 3
    mask = torch.zeros(n, 1, 8, 8)
    if masked:
        mask[:, :, :3, :3] = 1.0  # a corner patch the model must not use
    return GuidedBatch(x, y, mask)


def make(name: str, **params: Any) -> Guidance:
    g = GUIDANCE.get(name)(**params)
    assert isinstance(g, Guidance), name
    return g


def _model_state(model: nn.Module) -> tuple[Any, ...]:
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    modes = tuple(m.training for m in model.modules())
    hook_counts = tuple(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )
    patched = tuple("forward" in vars(m) for m in model.modules())
    grads = tuple(p.requires_grad for p in model.parameters())
    return weights, modes, hook_counts, patched, grads


def _assert_same_state(before: tuple[Any, ...], after: tuple[Any, ...], name: str) -> None:
    weights_b, *rest_b = before
    weights_a, *rest_a = after
    assert weights_b.keys() == weights_a.keys(), name
    for key in weights_b:
        assert torch.equal(weights_b[key], weights_a[key]), (name, key)
    assert rest_b == rest_a, f"{name} left the model changed (mode, hooks, forward or grads)"


def test_every_guidance_is_registered_by_import_rightfocus() -> None:
    assert set(NAMES) == {
        "bayes_feedback",
        "counterexamples",
        "proxy_attention",
        "rrr",
        "xgradient_prior",
    }
    assert rightfocus.GUIDANCE is GUIDANCE


@pytest.mark.parametrize("name", NAMES)
def test_metadata_comes_from_the_class(name: str) -> None:
    cls = GUIDANCE.get(name)
    meta = GUIDANCE.metadata(name)
    assert issubclass(cls, Guidance) and cls.name == name
    for cap in ("requires_mask", "requires_bayesian", "needs_input_grad"):
        assert meta[cap] is bool(getattr(cls, cap)), (name, cap)
    assert meta["summary"], f"{name} needs a one-line docstring summary"
    params = inspect.signature(cls.__init__).parameters
    assert all(
        p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for k, p in params.items() if k != "self"
    ), f"{name}: options must be keyword-only (configs pass them by name)"


@pytest.mark.parametrize("name", NAMES)
def test_named_scalar_terms_train_the_parameters_and_model_is_restored(name: str) -> None:
    torch.manual_seed(0)
    model = make_model(name)
    g = make(name)
    g.check(model)
    before = _model_state(model)
    logits, batch, terms = guided_forward(model, make_batch(), [g])
    assert _model_state(model)[1:] == before[1:], f"{name} left the model changed"
    assert logits.shape == (6, 3) and batch.x.shape == (6, 1, 8, 8)
    for key, value in terms.items():
        assert isinstance(key, str) and key, name
        assert isinstance(value, torch.Tensor) and value.dim() == 0, (name, key)
        assert torch.isfinite(value), (name, key)
    if not terms:  # data-level methods: the forward pass still trains the model
        terms = {"nll": torch.nn.functional.cross_entropy(logits, batch.y)}
    total = torch.stack(list(terms.values())).sum()
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(total, params, allow_unused=True)
    assert any(gr is not None and bool(gr.abs().sum() > 0) for gr in grads), name
    _assert_same_state(before, _model_state(model), name)


@pytest.mark.parametrize("name", NAMES)
def test_model_restored_when_the_forward_fails(name: str) -> None:
    model = make_model(name)

    class BoomError(RuntimeError):
        pass

    def boom(module: nn.Module, args: Any) -> None:
        raise BoomError

    g = make(name)
    before = _model_state(model)
    handle = model.fc.register_forward_pre_hook(boom) if hasattr(model, "fc") else None
    assert handle is not None
    with pytest.raises(BoomError):
        guided_forward(model, make_batch(), [g])
    handle.remove()
    _assert_same_state(before, _model_state(model), name)


@pytest.mark.parametrize("name", [n for n in NAMES if GUIDANCE.metadata(n)["requires_mask"]])
def test_empty_mask_policy_honoured(name: str) -> None:
    assert "empty_masks" in inspect.signature(GUIDANCE.get(name).__init__).parameters, (
        f"{name} requires masks, so it must take empty_masks='error'|'warn'|'ignore'"
    )
    empty = make_batch(n=64, masked=False)
    with pytest.raises(ValueError, match="empty"):
        guided_forward(make_model(name), empty, [make(name)])
    with pytest.warns(UserWarning, match="empty"):
        guided_forward(make_model(name), empty, [make(name, empty_masks="warn")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        guided_forward(make_model(name), empty, [make(name, empty_masks="ignore")])
    with pytest.raises(ValueError, match="empty_masks"):
        make(name, empty_masks="sometimes")


@pytest.mark.parametrize("name", NAMES)
def test_composes_with_another_method_in_guided_forward(name: str) -> None:
    other_name = "counterexamples" if name == "rrr" else "rrr"
    torch.manual_seed(0)
    model = make_model(name)
    g, other = make(name), make(other_name, lam=1.0) if other_name == "rrr" else make(other_name)
    _, _, alone = guided_forward(model, make_batch(), [make(name)])
    _, batch2, both = guided_forward(model, make_batch(), [g, other])
    _, _, other_alone = guided_forward(model, make_batch(), [make(other_name)])
    assert set(both) == set(alone) | set(other_alone), (name, other_name)
    assert set(alone).isdisjoint(other_alone)
    if GUIDANCE.metadata(name)["needs_input_grad"] or other.needs_input_grad:
        assert batch2.x.requires_grad


@pytest.mark.parametrize("name", NAMES)
def test_training_run_hooks_have_safe_defaults(name: str) -> None:
    g = make(name)
    g.check_config({"optim": {"epochs": getattr(g, "total_epochs", 3)}})
    data = [(torch.zeros(1, 4, 4), 0, torch.zeros(1, 4, 4))]
    wrapped = g.wrap_train_dataset(data)
    assert len(wrapped) == 1 and torch.equal(wrapped[0][0], data[0][0])  # type: ignore[arg-type]
    assert isinstance(g.reload_dataloaders, bool)
    assert isinstance(g.callbacks(None), list)
