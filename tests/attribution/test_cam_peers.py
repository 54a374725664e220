"""CAM family vs pytorch-grad-cam and Captum (float64, 1e-5 relative).

Where the peers differ on purpose, and how the comparison accounts for it:
- pytorch-grad-cam converts activations and gradients to numpy, ReLUs each map, min-max scales
  it (``/ (max + 1e-7)``) and resizes it with ``cv2.resize`` in float32. So the exact check is
  at the layer's resolution, through its ``get_cam_image`` on the activations and gradients it
  captured itself, against ours with ``relu=False, upsample=False``; the full pipeline is only
  compared on a layer at input resolution (no resize), to float32 precision.
- pytorch-grad-cam's Grad-CAM++ adds ``1e-6`` to the alpha denominator and XGrad-CAM adds
  ``1e-7`` to the activation sum; ours follow the papers (no eps) and take ``eps=`` to match.
- pytorch-grad-cam's Score-CAM weights are ``softmax_k`` of the target logits
  (``weighting="channel_softmax"``) with ``align_corners=True`` upsampling; it collects the
  scores with ``torch.Tensor(list)``, i.e. in float32, hence 1e-6 there.
- Captum's ``LayerGradCam`` does not ReLU by default and never upsamples; ``GuidedGradCam``
  upsamples with ``nearest`` by default (the paper, and our default, use bilinear).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

pgc = pytest.importorskip("pytorch_grad_cam")
captum_attr = pytest.importorskip("captum.attr")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from rightfocus import attribute  # noqa: E402

RTOL = 1e-5
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def close(a: Tensor, b: Tensor | np.ndarray, rtol: float = RTOL) -> None:
    b = torch.as_tensor(b).detach().to(a.dtype).reshape(a.shape)
    torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * float(b.abs().max()))


class StridedCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 5)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x))))).flatten(1))


@pytest.fixture
def model() -> nn.Module:
    return StridedCNN().double().eval()


@pytest.fixture
def x() -> Tensor:
    return torch.randn(3, 3, 12, 12, dtype=torch.float64)


@pytest.fixture
def target() -> Tensor:
    return torch.tensor([4, 0, 2])


def pgc_layer_map(cls: type, model: nn.Module, x: Tensor, target: Tensor) -> np.ndarray:
    """pytorch-grad-cam's map at the layer resolution, before its ReLU/scale/resize."""
    targets = [ClassifierOutputTarget(int(c)) for c in target]
    with cls(model=model, target_layers=[model.conv2]) as cam:
        cam(input_tensor=x, targets=targets)
        acts = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        return cam.get_cam_image(x, model.conv2, targets, acts, grads, False)


PGC = [
    ("gradcam", "GradCAM", {}),
    ("gradcam_plus_plus", "GradCAMPlusPlus", {"eps": 1e-6}),
    ("layercam", "LayerCAM", {}),
    ("xgradcam", "XGradCAM", {"eps": 1e-7}),
]


@pytest.mark.parametrize(("name", "peer", "opts"), PGC)
def test_vs_pytorch_grad_cam_at_layer_resolution(model, x, target, name, peer, opts):
    ours = attribute(model, x, target, name, relu=False, upsample=False, **opts)
    close(ours, pgc_layer_map(getattr(pgc, peer), model, x, target))


@pytest.mark.parametrize(("name", "peer", "opts"), PGC)
def test_vs_pytorch_grad_cam_full_pipeline_without_resize(
    make_tiny_cnn: type[nn.Module], name, peer, opts
):
    """On a layer at input resolution their cv2 resize is the identity: same normalised map."""
    model = make_tiny_cnn(in_channels=3, classes=5).double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    targets = [ClassifierOutputTarget(c) for c in (1, 3)]
    with getattr(pgc, peer)(model=model, target_layers=[model.features[2]]) as cam:
        theirs = cam(input_tensor=x, targets=targets)
    ours = attribute(model, x, torch.tensor([1, 3]), name, normalize=True, **opts)
    # float32 output and their 1e-7 vs our 1e-8 in the min-max denominator: 1e-4 absolute
    torch.testing.assert_close(
        ours[:, 0], torch.as_tensor(theirs, dtype=torch.float64), atol=1e-4, rtol=0
    )


def test_scorecam_vs_pytorch_grad_cam(model, x, target):
    targets = [ClassifierOutputTarget(int(c)) for c in target]
    with pgc.ScoreCAM(model=model, target_layers=[model.conv2]) as cam:
        cam.batch_size = 5
        cam(input_tensor=x, targets=targets)
        acts = cam.activations_and_grads.activations[0].numpy()
        theirs = cam.get_cam_image(x, model.conv2, targets, acts, None, False)
    ours = attribute(
        model, x, target, "scorecam", weighting="channel_softmax", align_corners=True,
        relu=False, upsample=False,
    )  # fmt: skip
    close(ours, theirs, rtol=1e-6)


@pytest.mark.parametrize("relu", [False, True])
def test_gradcam_vs_captum_layer_gradcam(model, x, target, relu):
    theirs = captum_attr.LayerGradCam(model, model.conv2).attribute(
        x, target, relu_attributions=relu
    )
    close(attribute(model, x, target, "gradcam", relu=relu, upsample=False), theirs)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_guided_gradcam_vs_captum(model, x, target, mode):
    theirs = captum_attr.GuidedGradCam(model, model.conv2).attribute(
        x, target, interpolate_mode=mode
    )
    close(attribute(model, x, target, "guided_gradcam", interpolation=mode), theirs)
