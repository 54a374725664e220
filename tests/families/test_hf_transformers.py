"""A real HuggingFace transformers model (``ViTForImageClassification``, random init from a
config, nothing downloaded): gradient methods, IG completeness, Grad-CAM with the automatic token
reshape (vs pytorch-grad-cam with its documented reshape transform), attention rollout and
gradient x attention (vs references on the attentions transformers returns itself), RRR and
Bayesian feedback, and the engine from a config. ``.logits`` is picked automatically."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from rightfocus import attribute, bayes
from rightfocus._modules import default_layer_name
from rightfocus._registry import MODELS
from rightfocus.attribution.outputs import with_output
from rightfocus.guidance.base import GuidedBatch, guided_forward
from rightfocus.guidance.bayes_feedback import BayesFeedback
from rightfocus.guidance.rrr import RRR
from rightfocus.models import build_model

pytest.importorskip(
    "transformers", reason="HuggingFace transformers is optional: pip install 'rightfocus[hf]'"
)
pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TINY: dict[str, Any] = {
    "image_size": 32,
    "patch_size": 8,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


def _model(dtype: torch.dtype = torch.float64, **options: Any) -> nn.Module:
    torch.manual_seed(0)
    model = build_model("hf_vit", num_classes=5, **{**TINY, **options})
    with torch.no_grad():  # transformers' init (std 0.02) gives near-constant logits
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    return model.to(dtype).eval()


def _x(b: int = 3) -> Tensor:
    return torch.rand(b, 3, 32, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def test_the_zoo_entry_and_the_default_layer() -> None:
    model = _model()
    out = model(_x())
    assert type(out).__name__ == "ImageClassifierOutput" and out.logits.shape == (3, 5)
    assert default_layer_name(model) == MODELS.metadata("hf_vit")["target_layer"]


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient", "smoothgrad"])
def test_gradient_methods_explain_the_logits(method: str) -> None:
    model, x, target = _model(), _x(), torch.tensor([4, 0, 2])
    options = {"n_samples": 4, "seed": 0} if method == "smoothgrad" else {}
    ours = attribute(model, x, target, method=method, **options)
    assert ours.shape == x.shape and bool(torch.isfinite(ours).all())
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xr).logits.gather(1, target[:, None]).sum(), xr)
    if method == "saliency":  # d logit_c / d x by hand
        torch.testing.assert_close(ours, g)
    elif method == "input_x_gradient":
        torch.testing.assert_close(ours, x * g)


def test_guided_backprop_is_refused_on_a_gelu_network() -> None:
    with pytest.raises(ValueError, match="has none"):
        attribute(_model(), _x(), 1, method="guided_backprop")


def test_integrated_gradients_is_complete() -> None:
    model, x = _model(), _x()
    ig, delta = attribute(
        model, x, 1, method="integrated_gradients", n_steps=64, integration="gausslegendre",
        return_delta=True,
    )  # fmt: skip
    gap = model(x).logits[:, 1] - model(torch.zeros_like(x)).logits[:, 1]
    torch.testing.assert_close(ig.sum(dim=(1, 2, 3)), gap, rtol=1e-4, atol=1e-6)
    assert float(delta.abs().max()) < 1e-4 * float(gap.abs().max())


def reshape_transform(tensor: Tensor, height: int = 4, width: int = 4) -> Tensor:
    """The reshape transform of pytorch-grad-cam's ViT documentation (vit_example.py)."""
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def test_gradcam_equals_pytorch_grad_cam_with_its_reshape_transform() -> None:
    """pytorch-grad-cam needs a tensor-returning model: ``with_output`` gives it the logits."""
    model = _model()
    x, target = _x(), torch.tensor([4, 0, 2])
    peer_model = with_output(copy.deepcopy(model))
    layer = peer_model.vit.layers[-1].layernorm_before
    targets = [ClassifierOutputTarget(int(c)) for c in target]
    with pgc.GradCAM(
        model=peer_model, target_layers=[layer], reshape_transform=reshape_transform
    ) as cam:
        cam(input_tensor=x, targets=targets)
        acts = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        ref = cam.get_cam_image(x, layer, targets, acts, grads, False)
    ours = attribute(model, x, target, method="gradcam", relu=False, upsample=False)
    assert ours.shape == (3, 1, 4, 4)
    ref_t = torch.as_tensor(np.asarray(ref)).reshape(ours.shape)
    assert float(ref_t.abs().max()) > 0
    torch.testing.assert_close(ours, ref_t, rtol=1e-5, atol=1e-5 * float(ref_t.abs().max()))


def _rollout_reference(attentions: tuple[Tensor, ...]) -> Tensor:
    """Abnar & Zuidema 2020 with explicit loops: A_hat = (0.5 A + 0.5 I) row-normalised,
    rollout = A_hat_L ... A_hat_1, the class token's row over the 4 x 4 patches."""
    b, n = attentions[0].shape[0], attentions[0].shape[-1]
    eye = torch.eye(n, dtype=attentions[0].dtype)
    ref = torch.zeros(b, 1, 4, 4, dtype=attentions[0].dtype)
    for i in range(b):
        rollout = eye
        for a in attentions:
            a_hat = 0.5 * a[i].mean(0) + 0.5 * eye
            rollout = (a_hat / a_hat.sum(-1, keepdim=True)) @ rollout
        ref[i, 0] = rollout[0, 1:].reshape(4, 4)
    return ref


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_attention_rollout_equals_the_papers_recursion(implementation: str) -> None:
    """The attentions transformers itself returns (``output_attentions=True``, eager) are the
    reference; an sdpa model is switched to eager for the call and switched back."""
    model = _model(attn_implementation=implementation)
    x = _x()
    ours = attribute(model, x, method="attention_rollout", upsample=False)
    assert model.config._attn_implementation == implementation
    model.config._attn_implementation = "eager"
    with torch.no_grad():
        attentions = model(x, output_attentions=True).attentions
    assert len(attentions) == 2
    torch.testing.assert_close(ours, _rollout_reference(attentions), rtol=1e-10, atol=1e-12)


def test_gradient_attention_equals_the_generic_rule() -> None:
    """Chefer et al. 2021: R = I; R <- R + E_h[(dS/dA * A)^+] R; the class token's row."""
    model = _model()
    x, target = _x(), torch.tensor([0, 2, 4])
    out = model(x, output_attentions=True)
    maps = out.attentions
    grads = torch.autograd.grad(out.logits.gather(1, target[:, None]).sum(), maps)
    n = maps[0].shape[-1]
    ref = torch.zeros(3, 1, 4, 4, dtype=torch.float64)
    for i in range(3):
        r = torch.eye(n, dtype=torch.float64)
        for a, g in zip(maps, grads, strict=True):
            r = r + (g[i] * a[i].detach()).clamp(min=0).mean(0) @ r
        ref[i, 0] = r[0, 1:].reshape(4, 4)
    ours = attribute(model, x, target, method="attention_gradient", upsample=False)
    torch.testing.assert_close(ours, ref, rtol=1e-8, atol=1e-12)


def test_rrr_and_bayes_feedback_train_it() -> None:
    mask = torch.zeros(4, 1, 32, 32)
    mask[..., :8, :8] = 1.0
    batch = GuidedBatch(_x(4).float(), torch.tensor([0, 1, 2, 3]), mask)
    model = with_output(_model(torch.float32)).train()
    logits, _, terms = guided_forward(model, batch, [RRR(lam=1.0)])
    loss = nn.functional.cross_entropy(logits, batch.y) + terms["rrr"]
    loss.backward()
    assert float(terms["rrr"].detach()) > 0
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    # Bayesian form: every Linear and the patch embedding's conv; feedback on that conv
    bnn = bayes.to_bayesian(model, init="copy").train()
    assert len(bayes.bayesian_layers(bnn)) == 2 * 6 + 2  # 6 per layer, patch conv, classifier
    logits, _, terms = guided_forward(bnn, batch, [BayesFeedback()])
    (value,) = terms.values()
    assert logits.shape == (4, 5) and float(value.detach()) != 0.0
    value.backward()


@pytest.mark.slow
def test_engine_trains_evaluates_and_explains_it(tmp_path: Path) -> None:
    """Two epochs of RRR on Decoy MNIST (1 x 28 x 28, 7 x 7 patches), then evaluate and explain
    the run with Grad-CAM and attention rollout (about 6 s)."""
    from rightfocus.engine.config import load_config_dict
    from rightfocus.engine.run import evaluate_run, explain_run, run_experiment

    torch.set_num_threads(1)
    options = {**TINY, "patch_size": 7}
    del options["image_size"]
    raw = {
        "runs_dir": str(tmp_path / "runs"),
        "experiment": "hf",
        "run": "vit",
        "data": {
            "dataset": "decoy_mnist",
            "variant": "position",
            "max_train": 48,
            "max_test": 16,
            "batch_size": 16,
            "folds": 2,
        },
        "model": {"name": "hf_vit", "options": options},
        "guidance": [{"name": "rrr", "lam": 1.0}],
        "optim": {"epochs": 2, "lr": 1e-3},
        "trainer": {"log_every_n_steps": 1, "progress_bar": False},
    }
    cfg = load_config_dict(raw)
    metrics = run_experiment(cfg, quiet=True)
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["nll"] > 0
    assert evaluate_run(cfg.run_dir) == pytest.approx(metrics, nan_ok=True)
    png = explain_run(cfg.run_dir, methods=["gradcam", "attention_rollout"], n=2)
    assert png.is_file()
