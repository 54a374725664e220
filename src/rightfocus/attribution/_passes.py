"""Forward passes over many perturbed images (Score-CAM, Kernel SHAP, LIME): the fast form.

Two inference rewrites that compute the same function up to float rounding:

- Memory layout: on the CPU, oneDNN's convolutions run faster on channels-last (NHWC) tensors
  than on the default NCHW layout; a convolution given a channels-last input keeps that layout
  through the network. A model that cannot take it (e.g. one calling ``.view`` on a feature
  map, which needs the default strides) raises a ``RuntimeError``: the pass is then repeated in
  the default layout and the remaining passes of the call keep it.
- BatchNorm folding: an eval-mode ``BatchNorm`` after a convolution is an affine map per
  channel, ``gamma (z - mu) / sqrt(var + eps) + beta``, so it folds into that convolution's
  weight and bias (Ioffe & Szegedy 2015, "Batch Normalization: Accelerating Deep Network
  Training by Reducing Internal Covariate Shift", inference form). The passes run on a folded
  copy (``torch.fx`` trace; the user's model is untouched) when the model is in eval mode, has
  BatchNorm, traces, and the copy reproduces the model's output on the first perturbed image
  (else the model itself runs).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.fx.experimental.optimization import fuse


def folded_copy(model: nn.Module, probe: Tensor) -> nn.Module:
    """A copy of ``model`` with each eval-mode BatchNorm folded into the convolution (or linear
    layer) before it, or ``model`` itself where that does not apply (see the module doc)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if model.training or not norms or any(m.training for m in norms):
        return model
    try:
        folded = fuse(model)
        with torch.inference_mode():
            same = torch.allclose(folded(probe), model(probe), rtol=1e-4, atol=1e-5)
    except Exception:  # untraceable models (control flow on values, ...) keep their own form
        return model
    return folded if same else model


class PassLayout:
    """Runs the passes of one attribution call in the fast form (see the module doc)."""

    def __init__(self, x: Tensor) -> None:
        self.channels_last = x.dim() == 4 and x.device.type == "cpu"
        self._folded: dict[int, nn.Module] = {}

    def forward(self, model: nn.Module, images: Tensor) -> Tensor:
        """``model(images)`` on the folded copy, channels-last where possible."""
        if id(model) not in self._folded:
            self._folded[id(model)] = folded_copy(model, images[:1])
        run = self._folded[id(model)]
        if self.channels_last:
            try:
                return run(images.contiguous(memory_format=torch.channels_last))
            except RuntimeError as err:  # e.g. .view() of a channels-last feature map
                if not is_layout_refusal(err):
                    raise  # the model's own error: never retried, never swallowed
                self.channels_last = False
        return run(images)


def is_layout_refusal(err: RuntimeError) -> bool:
    """Whether ``err`` is a model refusing channels-last strides (``.view`` of a feature map:
    "view size is not compatible with input tensor's size and stride ... contiguous ...")."""
    return "stride" in str(err) or "contiguous" in str(err)
