"""Models: LeNet variants, X-DNNs and the registered model zoo."""

from rightfocus.models import families, zoo
from rightfocus.models.lenet import LeNet, LeNet5
from rightfocus.models.xdnn import XResNet, check_homogeneous, homogeneity_error, to_xdnn
from rightfocus.models.zoo import build_model, load_weights_file

__all__ = [
    "LeNet",
    "LeNet5",
    "XResNet",
    "build_model",
    "check_homogeneous",
    "families",
    "homogeneity_error",
    "load_weights_file",
    "to_xdnn",
    "zoo",
]
