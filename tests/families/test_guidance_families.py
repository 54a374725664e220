"""Guidance and the engine on a ConvNeXt and a ViT: loss terms, refusals, Bayesian forms,
and (slow) training from a config with RRR, counterexamples and Proxy Attention."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from rightfocus.bayes import bayesian_layers, to_bayesian
from rightfocus.guidance.base import GuidedBatch, guided_forward
from rightfocus.guidance.bayes_feedback import BayesFeedback
from rightfocus.guidance.proxy_attention import make_proxies
from rightfocus.models import build_model

pytest.importorskip("timm")

# 1-channel 28 x 28 (Decoy MNIST) versions: the ConvNeXt stem keeps full resolution
MODELS: dict[str, dict[str, Any]] = {
    "convnext_atto": {"dims": (8, 16, 24, 32), "depths": (1, 1, 1, 1), "patch_size": 1},
    "vit": {"image_size": 28, "patch_size": 7, "embed_dim": 16, "depth": 2, "num_heads": 2},
}


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, num_classes=10, in_channels=1, **MODELS[name])


def _batch() -> GuidedBatch:
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(4, 1, 28, 28)
    mask[:, :, :6, :6] = 1.0  # a decoy corner the model must not use
    return GuidedBatch(torch.rand(4, 1, 28, 28, generator=g), torch.tensor([0, 3, 5, 9]), mask)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("method", ["rrr", "counterexamples"])
def test_guidance_terms_train_the_model(name: str, method: str) -> None:
    from rightfocus._registry import GUIDANCE

    model = _model(name).train()
    guidance = [GUIDANCE.get(method)(**({"seed": 7} if method == "counterexamples" else {}))]
    logits, batch, terms = guided_forward(model, _batch(), guidance)
    loss = nn.functional.cross_entropy(logits, batch.y) + sum(terms.values(), torch.tensor(0.0))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    if method == "rrr":
        assert float(terms["rrr"]) > 0  # the decoy corner has input gradient
    else:  # the decoy corner was replaced by noise, the rest kept
        original = _batch()
        corner = original.mask.bool().expand_as(original.x)
        assert bool((batch.x[corner] != original.x[corner]).any())
        torch.testing.assert_close(batch.x[~corner], original.x[~corner])


@pytest.mark.parametrize("name", list(MODELS))
def test_xgradient_prior_is_refused_without_a_bias_free_variant(name: str) -> None:
    """LayerNorm makes both models scale-invariant, so no bias-free (homogeneous) form exists."""
    from rightfocus._registry import GUIDANCE

    guidance = [GUIDANCE.get("xgradient_prior")()]
    with pytest.raises(ValueError, match="not positively homogeneous"):
        guided_forward(_model(name), _batch(), guidance)


@pytest.mark.parametrize("name", list(MODELS))
def test_to_bayesian_converts_convs_linears_and_attention_projections(name: str) -> None:
    model = _model(name).eval()
    plain = [m for m in model.modules() if type(m) in (nn.Conv2d, nn.Linear)]
    bnn = to_bayesian(model, init="copy")
    assert len(bayesian_layers(bnn)) == len(plain)
    x = _batch().x
    from rightfocus import hooks

    with torch.no_grad(), hooks.sampling(bnn, False):
        torch.testing.assert_close(bnn.eval()(x), model(x), rtol=1e-5, atol=1e-6)
    if name == "vit":
        assert type(bnn.blocks[0].attn.qkv).__name__ == "BayesLinear"


@pytest.mark.parametrize("name", list(MODELS))
def test_bayes_feedback_runs_on_the_last_bayesian_conv(name: str) -> None:
    """ConvNeXt: the last block's depthwise conv; ViT: the patch embedding (its only conv)."""
    bnn = to_bayesian(_model(name)).train()
    feedback = BayesFeedback()
    logits, _, terms = guided_forward(bnn, _batch(), [feedback])
    assert logits.shape == (4, 10)
    (value,) = terms.values()
    assert bool(torch.isfinite(value)) and float(value) != 0.0
    value.backward()


def test_bayes_feedback_refuses_a_model_without_a_bayesian_conv() -> None:
    mlp = to_bayesian(nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10)))
    with pytest.raises(ValueError, match="no Conv2d layer"):
        guided_forward(mlp, _batch(), [BayesFeedback()])


@pytest.mark.parametrize("name", list(MODELS))
def test_proxy_attention_makes_proxies_with_the_family_default_layer(name: str) -> None:
    model = _model(name).eval()
    x = _batch().x
    originals, proxies = make_proxies(model, x, torch.tensor([1, 2, 3, 4]), threshold=0.5)
    assert proxies.shape == x.shape
    assert bool((proxies <= originals + 1e-6).all())  # proxies only down-weight pixels
    assert bool((proxies < originals - 1e-6).any())


def _config(tmp_path: Path, name: str, **extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "runs_dir": str(tmp_path / "runs"),
        "experiment": "families",
        "run": name,
        "data": {
            "dataset": "decoy_mnist",
            "variant": "position",
            "max_train": 32,
            "max_test": 16,
            "batch_size": 16,
            "folds": 2,
        },
        "model": {"name": name, "options": MODELS[name]},
        "guidance": [
            {"name": "rrr", "lam": 10.0},
            {
                "name": "proxy_attention",
                "schedule": [1, "p", 1],
                "method": "gradcam",
                "subset": 1.0,
                "batch_size": 16,
            },
        ],
        "optim": {"epochs": 3, "lr": 1e-3},
        "trainer": {"log_every_n_steps": 1, "progress_bar": False},
        "evaluation": {"metrics": ["accuracy", "nll"]},
    }
    raw.update(extra)
    return raw


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_train_from_a_config_with_rrr_and_proxy_attention(tmp_path: Path, name: str) -> None:
    """Three epochs of 2 steps each, the middle one a proxy epoch."""
    from rightfocus.engine.config import load_config_dict
    from rightfocus.engine.run import run_experiment

    torch.set_num_threads(1)
    metrics = run_experiment(load_config_dict(_config(tmp_path, name)), quiet=True)
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["nll"] > 0
