"""Transformers: Grad-CAM on token layouts (vs pytorch-grad-cam), attention rollout and the
gradient x attention rule (vs slow references written from the papers), the output selector."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.families._tiny import build
from torch import Tensor, nn

from rightfocus import attribute, hooks
from rightfocus.attribution.outputs import select_output

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _x(b: int = 3) -> Tensor:
    return torch.rand(b, 3, 32, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def reshape_transform(tensor: Tensor, height: int = 4, width: int = 4) -> Tensor:
    """The reshape transform of pytorch-grad-cam's ViT documentation (vit_example.py)."""
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def test_vit_gradcam_equals_pytorch_grad_cam_with_its_reshape_transform() -> None:
    model = build("vit", torch.float64)
    x, target = _x(), torch.tensor([4, 0, 2])
    layer = model.blocks[-1].norm1
    targets = [ClassifierOutputTarget(int(c)) for c in target]
    with pgc.GradCAM(
        model=model, target_layers=[layer], reshape_transform=reshape_transform
    ) as cam:
        cam(input_tensor=x, targets=targets)
        acts = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        ref = cam.get_cam_image(x, layer, targets, acts, grads, False)
    ours = attribute(model, x, target, method="gradcam", relu=False, upsample=False)
    assert ours.shape == (3, 1, 4, 4)
    ref_t = torch.as_tensor(np.asarray(ref)).reshape(ours.shape)
    torch.testing.assert_close(ours, ref_t, rtol=1e-5, atol=1e-5 * float(ref_t.abs().max()))
    assert float(ref_t.abs().max()) > 0


def test_default_layer_is_the_last_blocks_norm_and_needs_no_reshape() -> None:
    model = build("vit", torch.float64)
    x = _x()
    named = attribute(model, x, 1, method="gradcam", layer="blocks.1.norm1")
    default = attribute(model, x, 1, method="gradcam")
    torch.testing.assert_close(default, named)
    assert default.shape == (3, 1, 32, 32)


@pytest.mark.parametrize("family", ["deit", "swin"])
def test_token_layouts_match_a_hand_reshaped_grad_cam(family: str) -> None:
    """DeiT: two prefix tokens dropped; Swin: channels-last (B, H, W, C) permuted."""
    model = build(family, torch.float64)
    x, target = _x(2), torch.tensor([1, 3])
    layer = model.blocks[-1].norm1 if family == "deit" else model.norm
    saved: dict[str, Tensor] = {}

    def keep(_m: nn.Module, out: Tensor) -> Tensor:
        out = out.detach().requires_grad_(True)
        saved["a"] = out
        return out

    with hooks.capture_activations(model, [layer], transform=keep):
        scores = model(x).gather(1, target[:, None]).sum()
    (g,) = torch.autograd.grad(scores, saved["a"])
    a = saved["a"].detach()
    if family == "deit":  # (B, 2 + 16, C) -> (B, C, 4, 4)
        a = a[:, 2:].transpose(1, 2).reshape(2, -1, 4, 4)
        g = g[:, 2:].transpose(1, 2).reshape(2, -1, 4, 4)
    else:  # (B, 4, 4, C) -> (B, C, 4, 4)
        a, g = a.permute(0, 3, 1, 2), g.permute(0, 3, 1, 2)
    ref = (g.mean(dim=(2, 3), keepdim=True) * a).sum(1, keepdim=True)
    ours = attribute(model, x, target, method="gradcam", relu=False, upsample=False)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)


def _attention_by_hand(model: nn.Module, x: Tensor) -> tuple[list[Tensor], Tensor]:
    """A hand-written forward of the ViT's blocks from their weights: every block's attention
    ``softmax(q k^T / sqrt(d))`` and the logits computed through those very maps."""
    maps = []
    tokens = model._pos_embed(model.patch_embed(x))
    for block in model.blocks:
        attn = block.attn
        h = block.norm1(tokens)
        b, n, c = h.shape
        qkv = attn.qkv(h).reshape(b, n, 3, attn.num_heads, c // attn.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        a = ((q @ k.transpose(-2, -1)) * attn.scale).softmax(-1)
        maps.append(a)
        mixed = attn.proj((a @ v).transpose(1, 2).reshape(b, n, c))
        tokens = tokens + block.ls1(mixed)
        tokens = tokens + block.ls2(block.mlp(block.norm2(tokens)))
    logits = model.head(model.fc_norm(model.norm(tokens)[:, 0]))
    return maps, logits


def test_attention_rollout_equals_the_papers_recursion() -> None:
    """Abnar & Zuidema 2020: A_hat = (0.5 A + 0.5 I) row-normalised, rollout = A_hat_L ... A_hat_1,
    written with explicit loops over samples and layers."""
    model = build("vit", torch.float64)
    x = _x()
    with torch.no_grad():
        maps, logits = _attention_by_hand(model, x)
    torch.testing.assert_close(logits, model(x), rtol=1e-10, atol=1e-12)
    ref = torch.zeros(3, 1, 4, 4, dtype=torch.float64)
    for i in range(3):
        n = maps[0].shape[-1]
        rollout = torch.eye(n, dtype=torch.float64)
        for a in maps:
            a_hat = 0.5 * a[i].mean(0) + 0.5 * torch.eye(n, dtype=torch.float64)
            a_hat = a_hat / a_hat.sum(-1, keepdim=True)
            rollout = a_hat @ rollout
        ref[i, 0] = rollout[0, 1:].reshape(4, 4)
    ours = attribute(model, x, method="attention_rollout", upsample=False)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)


def test_gradient_attention_equals_the_generic_rule() -> None:
    """Chefer et al. 2021: R = I; R <- R + E_h[(dS/dA * A)^+] R; the class token's row."""
    model = build("vit", torch.float64)
    x, target = _x(), torch.tensor([0, 2, 4])
    xr = x.clone().requires_grad_(True)
    maps, out = _attention_by_hand(model, xr)
    torch.testing.assert_close(out, model(x), rtol=1e-10, atol=1e-12)
    grads = torch.autograd.grad(out.gather(1, target[:, None]).sum(), maps)
    n = maps[0].shape[-1]
    ref = torch.zeros(3, 1, 4, 4, dtype=torch.float64)
    for i in range(3):
        r = torch.eye(n, dtype=torch.float64)
        for a, g in zip(maps, grads):
            r = r + (g[i] * a[i].detach()).clamp(min=0).mean(0) @ r
        ref[i, 0] = r[0, 1:].reshape(4, 4)
    ours = attribute(model, x, target, method="attention_gradient", upsample=False)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)


def test_attention_methods_restore_fused_attention_also_after_an_error() -> None:
    model = build("vit")
    flags = [blk.attn.fused_attn for blk in model.blocks]
    attribute(model, _x().float(), method="attention_rollout")
    with pytest.raises(ValueError, match="out of range"):
        attribute(model, _x().float(), 99, method="attention_gradient")
    assert [blk.attn.fused_attn for blk in model.blocks] == flags
    assert hooks.count_hooks(model) == 0


@pytest.mark.parametrize("method", ["attention_rollout", "attention_gradient"])
def test_attention_methods_refuse_windowed_attention_and_cnns(method: str) -> None:
    with pytest.raises(ValueError, match="windowed attention"):
        attribute(build("swin"), _x().float(), method=method)
    with pytest.raises(ValueError, match="no attention block"):
        attribute(build("resnet18"), _x().float(), method=method)


class Structured(nn.Module):
    """Wraps a classifier; returns its logits as a tuple, dict or ``.logits`` object."""

    def __init__(self, inner: nn.Module, kind: str) -> None:
        super().__init__()
        self.inner, self.kind = inner, kind

    def forward(self, x: Tensor) -> object:
        logits = self.inner(x)
        if self.kind == "tuple":
            return (logits, logits.detach().mean())
        if self.kind == "dict":
            return {"logits": logits, "features": x}
        if self.kind == "aux_first":
            return {"aux": x, "scores": logits}

        class Output:
            pass

        out = Output()
        out.logits = logits  # type: ignore[attr-defined]
        return out


@pytest.mark.parametrize("kind", ["tuple", "dict", "object"])
@pytest.mark.parametrize("method", ["saliency", "gradcam", "integrated_gradients", "deeplift"])
def test_structured_outputs_are_explained_like_the_logits(
    make_tiny_cnn: type[nn.Module], kind: str, method: str
) -> None:
    inner = make_tiny_cnn(in_channels=3, classes=5).double().eval()
    x = _x(2)
    ref = attribute(inner, x, 1, method=method)
    wrapped = Structured(inner, kind)
    torch.testing.assert_close(attribute(wrapped, x, 1, method=method), ref)
    assert hooks.count_hooks(wrapped) == 0


def test_output_selector_by_key_attribute_index_and_callable() -> None:
    inner = build("vit", torch.float64)
    x = _x(2)
    ref = attribute(inner, x, 3, method="saliency")
    wrapped = Structured(inner, "aux_first")
    with pytest.raises(TypeError, match="output="):
        attribute(wrapped, x, 3, method="saliency")
    torch.testing.assert_close(attribute(wrapped, x, 3, method="saliency", output="scores"), ref)
    torch.testing.assert_close(
        attribute(wrapped, x, 3, method="saliency", output=lambda o: o["scores"]), ref
    )
    assert select_output((1, torch.ones(2, 3)), 1).shape == (2, 3)
    with pytest.raises(ValueError, match="not a key"):
        select_output({"a": torch.ones(1)}, "logits")
    with pytest.raises(TypeError, match="output must be"):
        attribute(inner, x, 3, method="saliency", output=1.5)
