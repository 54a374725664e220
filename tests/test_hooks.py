"""rightfocus.hooks: every change to a user's model is scoped and undone, also after errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rightfocus import hooks


class BoomError(RuntimeError):
    pass


@pytest.fixture
def model(make_tiny_cnn: type[nn.Module]) -> nn.Module:
    return make_tiny_cnn().double()


def _flags(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def test_eval_mode_restores_mixed_flags(model):
    model.train()
    model.features[1].eval()  # a user's deliberate mix of flags
    before = _flags(model)
    with hooks.eval_mode(model):
        assert not any(_flags(model))
    assert _flags(model) == before
    with pytest.raises(BoomError), hooks.eval_mode(model):
        raise BoomError
    assert _flags(model) == before
    with hooks.eval_mode(model, enabled=False):
        assert _flags(model) == before


def test_frozen_parameters_restores_requires_grad(model):
    model.fc.bias.requires_grad_(False)  # already frozen by the user: stays frozen
    before = [p.requires_grad for p in model.parameters()]
    with hooks.frozen_parameters(model):
        assert not any(p.requires_grad for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == before
    with pytest.raises(BoomError), hooks.frozen_parameters(model):
        raise BoomError
    assert [p.requires_grad for p in model.parameters()] == before


def test_capture_activations_records_and_removes_hooks(model):
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    conv = model.features[2]
    with hooks.capture_activations(model, [conv]) as cap:
        assert hooks.count_hooks(model) == 1
        model(x)
        torch.testing.assert_close(cap[conv], conv(model.features[1](model.features[0](x))))
    assert hooks.count_hooks(model) == 0
    assert cap.outputs == {}
    with pytest.raises(BoomError), hooks.capture_activations(model, [conv]):
        raise BoomError
    assert hooks.count_hooks(model) == 0


def test_capture_activations_transform_replaces_output(model):
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    relu = model.features[3]
    with hooks.capture_activations(model, [relu], transform=lambda m, out: out * 0) as cap:
        out = model(x)
        assert bool((cap[relu] == 0).all())
    torch.testing.assert_close(out, model.fc.bias.expand_as(out))
    assert hooks.count_hooks(model) == 0


def test_capture_activations_unused_layer_message(model):
    unused = nn.Conv2d(1, 1, 1)
    model.extra = unused
    with (
        hooks.capture_activations(model, [unused]) as cap,
        pytest.raises(RuntimeError, match="did not call this layer"),
    ):
        model(torch.rand(1, 1, 8, 8, dtype=torch.float64))
        cap[unused]


@pytest.mark.parametrize("rule", ["guided", "deconvnet"])
def test_relu_backward_rule_patches_and_restores(model, rule):
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    plain = model(x)
    with hooks.relu_backward_rule(model, rule):
        assert hooks.count_hooks(model) == 2  # two patched ReLU forwards
        torch.testing.assert_close(model(x), plain)  # forward unchanged
    assert hooks.count_hooks(model) == 0
    assert all("forward" not in m.__dict__ for m in model.modules())
    with pytest.raises(BoomError), hooks.relu_backward_rule(model, rule):
        raise BoomError
    assert hooks.count_hooks(model) == 0


def test_relu_backward_rule_bad_input(model):
    with (
        pytest.raises(ValueError, match="Unknown ReLU backward rule"),
        hooks.relu_backward_rule(model, "zeiler"),
    ):
        pass
    no_relu = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh())
    with (
        pytest.raises(ValueError, match=r"nn\.ReLU"),
        hooks.relu_backward_rule(no_relu, "guided"),
    ):
        pass


def test_patched_forward_keeps_an_instance_forward(model):
    conv = model.features[0]

    def own(v: torch.Tensor) -> torch.Tensor:
        return v

    conv.forward = own  # the user already patched this instance
    with hooks.patched_forward(conv, lambda orig: lambda v: orig(v) * 2):
        assert conv.forward is not own
    assert conv.forward is own
    del conv.forward
    with pytest.raises(BoomError), hooks.patched_forward(conv, lambda orig: orig):
        raise BoomError
    assert "forward" not in conv.__dict__


def test_guided_relu_double_backward():
    """The guided backward is written in differentiable ops: create_graph works through it."""
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    relu = nn.ReLU()
    with hooks.relu_backward_rule(relu, "guided"):
        y = relu(x * w).sum()
        (g,) = torch.autograd.grad(y, x, create_graph=True)
    (gw,) = torch.autograd.grad(g.sum(), w)
    torch.testing.assert_close(gw, ((x * w) > 0).double())


def test_sampling_sets_and_restores_flag():
    class FakeBayes(nn.Module):
        sample: bool | None = None

        def moments(self, v):
            return v, v

    model = nn.Sequential(FakeBayes(), nn.ReLU(), FakeBayes())
    model[2].sample = False
    with hooks.sampling(model, True):
        assert model[0].sample is True and model[2].sample is True
    assert model[0].sample is None and model[2].sample is False
    with pytest.raises(BoomError), hooks.sampling(model, None):
        raise BoomError
    assert model[0].sample is None and model[2].sample is False


def test_count_hooks_sees_user_hooks(model):
    handle = model.fc.register_forward_hook(lambda *a: None)
    assert hooks.count_hooks(model) == 1
    handle.remove()
    assert hooks.count_hooks(model) == 0


def test_patched_forward_keeps_the_error_of_make_forward(model):
    def broken(original):
        raise KeyError("make_forward failed")

    with pytest.raises(KeyError, match="make_forward failed"), hooks.patched_forward(model, broken):
        pass
    assert "forward" not in model.__dict__
