"""Integrated Gradients runs its path passes channels-last on the CPU: the same numbers as Captum
on a ConvNeXt (LayerNorm over permuted maps) and on a model that refuses the layout."""

from __future__ import annotations

import pytest
import torch
from tests.families._tiny import build
from torch import Tensor, nn

from rightfocus import attribute

captum_attr = pytest.importorskip("captum.attr")


class ViewsItsFeatureMap(nn.Module):
    """``.view`` of a convolution's output: raises on a channels-last map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 30 * 30, 5)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        return self.fc(y.view(y.shape[0], -1))


@pytest.mark.parametrize("family", ["convnext", "views"])
def test_integrated_gradients_equals_captum_in_either_layout(family: str) -> None:
    torch.manual_seed(0)
    model = build(family) if family == "convnext" else ViewsItsFeatureMap().eval()
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    if family == "views":
        with pytest.raises(RuntimeError, match="stride"):
            model(x.contiguous(memory_format=torch.channels_last))
    target = torch.tensor([0, 2, 4])
    ours = attribute(model, x, target, "integrated_gradients", n_steps=4, internal_batch_size=12)
    ref = captum_attr.IntegratedGradients(model).attribute(
        x, target=target, n_steps=4, internal_batch_size=12
    )
    assert ours.is_contiguous()
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
