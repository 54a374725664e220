"""rightfocus._registry: registration, lookup errors, metadata; the method registry's content."""

from __future__ import annotations

import pytest

import rightfocus
from rightfocus import METHODS, Attribution
from rightfocus._registry import Registry


def test_register_get_metadata_names():
    reg: Registry[object] = Registry("widget")

    @reg.register("round", doc="a round widget", size=3)
    class Round: ...

    @reg.register("flat")
    class Flat: ...

    assert reg.get("round") is Round
    assert reg.names() == ["flat", "round"]
    assert reg.metadata("round") == {"doc": "a round widget", "size": 3}
    assert "round" in reg and "square" not in reg
    assert len(reg) == 2
    assert [name for name, _ in reg.items()] == ["flat", "round"]
    assert "widget" in repr(reg)
    meta = reg.metadata("round")
    meta["size"] = 99
    assert reg.metadata("round")["size"] == 3  # a copy


def test_unknown_name_suggests_and_lists():
    reg: Registry[object] = Registry("widget")
    reg.register("gradcam")(object)
    with pytest.raises(ValueError, match=r"Unknown widget 'gradcm'.*Did you mean 'gradcam'"):
        reg.get("gradcm")
    with pytest.raises(ValueError, match="Known widgets: gradcam"):
        reg.metadata("zzz")


def test_duplicate_and_bad_names():
    reg: Registry[object] = Registry("widget")
    reg.register("a")(int)
    reg.register("a")(int)  # re-registering the same object is harmless (module reloads)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(float)
    with pytest.raises(ValueError, match="non-empty string"):
        reg.register("")


def test_method_registry_holds_attribution_classes_with_capabilities():
    expected = {
        "saliency",
        "input_x_gradient",
        "integrated_gradients",
        "guided_backprop",
        "deconvnet",
        "gradcam",
        "gradcam_plus_plus",
        "layercam",
        "xgradcam",
        "scorecam",
        "guided_gradcam",
        "cam",
        "smoothgrad",
        "smoothgrad_sq",
        "vargrad",
        "occlusion",
        "lrp",
        "deeplift",
        "deepshap",
        "kernel_shap",
        "lime",
        "rise",
        "attention_rollout",
        "attention_gradient",
    }
    assert set(METHODS.names()) == expected
    for name, cls in METHODS.items():
        assert issubclass(cls, Attribution), name
        assert cls.name == name
        meta = METHODS.metadata(name)
        for cap in ("differentiable", "needs_layer", "model_agnostic", "stochastic", "output"):
            assert meta[cap] == getattr(cls, cap), (name, cap)
        assert meta["output"] in ("input", "map")
        assert meta["summary"], f"{name} needs a one-line docstring summary"


def test_unknown_method_error_via_attribute():
    import torch

    with pytest.raises(ValueError, match="Did you mean 'saliency'"):
        rightfocus.attribute(torch.nn.Linear(1, 1), torch.zeros(1, 1, 1, 1), method="salency")


def test_cli_lists_the_guidance_methods() -> None:
    from typer.testing import CliRunner

    from rightfocus.cli import app

    result = CliRunner().invoke(app, ["list", "guidance"])
    assert result.exit_code == 0, result.output
    for name in ("bayes_feedback", "counterexamples", "proxy_attention", "rrr", "xgradient_prior"):
        assert name in result.output
