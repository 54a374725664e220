"""LeNet variants used by the Bayesian explanation-feedback paper (Bayesian CNNs, Decoy MNIST)."""

from __future__ import annotations

from collections import OrderedDict
from typing import ClassVar

from torch import Tensor, nn

from rightfocus._pooling import MaxPool2d

__all__ = ["LeNet", "LeNet5"]


class LeNet(nn.Module):
    """The paper's LeNet with 3x3 convolutions.

    ``conv(1->6, 3x3) - ReLU - maxpool2 - conv(6->16, 3x3) - ReLU - maxpool2 - 400-120-84-C``.
    For a 28x28 input the last conv layer (``features.conv2``) gives 16x11x11 activations,
    the layer where the paper applies explanation feedback.
    """

    kernel_size: ClassVar[int] = 3
    padding: ClassVar[int] = 0  # of the first conv only
    min_size: ClassVar[int] = 10

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        if image_size < self.min_size:
            raise ValueError(
                f"{type(self).__name__} needs images of at least {self.min_size}x{self.min_size} "
                f"pixels, got {image_size}"
            )
        k = self.kernel_size
        side = ((image_size + 2 * self.padding - k + 1) // 2 - k + 1) // 2
        self.features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(in_channels, 6, k, padding=self.padding),
                relu1=nn.ReLU(),
                pool1=MaxPool2d(2),
                conv2=nn.Conv2d(6, 16, k),
                relu2=nn.ReLU(),
                pool2=MaxPool2d(2),
            )
        )
        self.classifier = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(16 * side * side, 120),
                relu3=nn.ReLU(),
                fc2=nn.Linear(120, 84),
                relu4=nn.ReLU(),
                fc3=nn.Linear(84, num_classes),
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


class LeNet5(LeNet):
    """Classic LeNet-5 (LeCun et al. 1998, "Gradient-based learning applied to document
    recognition") with 5x5 convolutions and ReLU.

    ``conv(1->6, 5x5, pad 2) - ReLU - maxpool2 - conv(6->16, 5x5) - ReLU - maxpool2 - 400-120-84-C``
    for 28x28 inputs; the last conv layer is ``features.conv2`` (16x10x10).
    """

    kernel_size = 5
    padding = 2
    min_size = 12
