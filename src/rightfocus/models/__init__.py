"""Models: LeNet variants, X-DNNs and the registered model zoo."""

from rightfocus.models import zoo
from rightfocus.models.lenet import LeNet, LeNet5
from rightfocus.models.zoo import build_model, load_weights_file

__all__ = ["LeNet", "LeNet5", "build_model", "load_weights_file", "zoo"]
