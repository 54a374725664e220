"""The modern families in the zoo: registered default layers, weights files, CLI listing."""

from __future__ import annotations

import pytest
import torch

from rightfocus import MODELS
from rightfocus._modules import default_layer_name, resolve_layer
from rightfocus.models import build_model

pytest.importorskip("timm")


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: a contended thread pool only slows them down
    yield
    torch.set_num_threads(previous)


TINY = {
    "convnext_atto": {"dims": (8, 16, 24, 32), "depths": (1, 1, 1, 1)},
    "mobilenetv3_small_050": {},
    "regnetx_002": {},
    "densenet": {"growth_rate": 4, "block_config": (2, 2), "num_init_features": 8},
    "vit": {"image_size": 32, "patch_size": 8, "embed_dim": 16, "depth": 2, "num_heads": 2},
    "deit_distilled": {"image_size": 32, "patch_size": 8, "embed_dim": 16, "depth": 2,
                       "num_heads": 2},
    "swin": {"image_size": 32, "patch_size": 4, "window_size": 4, "embed_dim": 16,
             "depths": (1, 1), "num_heads": (1, 2)},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(TINY))
def test_registered_target_layer_is_the_family_default(name: str) -> None:
    model = build_model(name, num_classes=4, in_channels=1, **TINY[name])
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 4)
    layer = MODELS.metadata(name)["target_layer"]
    assert default_layer_name(model) == layer
    resolve_layer(model, layer)  # negative indices resolve


def test_transformers_are_built_unfused_for_double_backward() -> None:
    model = build_model("vit", **TINY["vit"])
    assert not any(m.fused_attn for m in model.modules() if hasattr(m, "fused_attn"))
    fused = build_model("vit", fused_attn=True, **TINY["vit"])
    assert all(m.fused_attn for m in fused.modules() if hasattr(m, "fused_attn"))


def test_local_weights_file_for_a_timm_model(tmp_path) -> None:
    src = build_model("vit", num_classes=4, **TINY["vit"])
    path = tmp_path / "vit.pth"
    torch.save(src.state_dict(), path)
    model = build_model("vit", num_classes=4, weights=path, **TINY["vit"])
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)


def test_negative_index_paths_and_a_clear_error_for_missing_ones() -> None:
    model = build_model("vit", **TINY["vit"])
    assert resolve_layer(model, "blocks.-1.norm1") is model.blocks[1].norm1
    with pytest.raises(ValueError, match=r"no layer named 'blocks\.5\.norm1'"):
        resolve_layer(model, "blocks.5.norm1")


def test_cli_lists_the_models_with_their_target_layers() -> None:
    from typer.testing import CliRunner

    from rightfocus.cli import app

    result = CliRunner().invoke(app, ["list", "models"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for name, layer in [("convnext_atto", "stages.-1"), ("vit", "blocks.-1.norm1"),
                        ("swin", "target_layer=norm"), ("densenet", "features.-1")]:  # fmt: skip
        assert name in text and layer in text
