"""Forward passes over many perturbed images (Score-CAM, Kernel SHAP, LIME): the fast layout.

On the CPU, oneDNN's convolutions run faster on channels-last (NHWC) tensors than on the
default NCHW layout (about 1.4x for a torchvision ResNet-18 on 224x224 images); a convolution
given a channels-last input keeps that layout through the network, and the values are the same
up to float rounding. A model that cannot take it (e.g. one calling ``.view`` on a feature map,
which needs the default strides) raises a ``RuntimeError``: the pass is then repeated in the
default layout and the remaining passes of the call keep it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class PassLayout:
    """Runs the passes of one attribution call: channels-last while the model accepts it."""

    def __init__(self, x: Tensor) -> None:
        self.channels_last = x.dim() == 4 and x.device.type == "cpu"

    def forward(self, model: nn.Module, images: Tensor) -> Tensor:
        """``model(images)``, channels-last where possible (see the module doc)."""
        if self.channels_last:
            try:
                return model(images.contiguous(memory_format=torch.channels_last))
            except RuntimeError:  # e.g. .view() of a channels-last feature map
                self.channels_last = False
        return model(images)
