"""Model zoo: registered builders, local weight files, and the offline download error."""

from __future__ import annotations

import pytest
import torch

from rightfocus.models import build_model
from rightfocus.models.zoo import load_weights_file


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [
        ("lenet", {}, (2, 1, 28, 28)),
        ("lenet5", {}, (2, 1, 28, 28)),
        ("alexnet", {"image_size": 64}, (2, 3, 64, 64)),
        ("resnet18", {"image_size": 32}, (2, 3, 32, 32)),
        ("xresnet", {"image_size": 32, "width": 4}, (2, 3, 32, 32)),
    ],
)
def test_builders_give_the_requested_classes(name, kwargs, shape) -> None:
    model = build_model(name, num_classes=6, **kwargs)
    assert model(torch.rand(shape)).shape == (2, 6)


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="Did you mean 'lenet'"):
        build_model("lenett")


def test_local_weights_file_loads_matching_tensors(tmp_path) -> None:
    src = build_model("alexnet", num_classes=1000, image_size=64)
    path = tmp_path / "alexnet.pth"
    torch.save(src.state_dict(), path)
    # another class count: everything but the last classifier layer is copied
    model = build_model("alexnet", num_classes=3, image_size=64, weights=path)
    torch.testing.assert_close(model.features[0].weight, src.features[0].weight)
    assert model.classifier[6].weight.shape == (3, 4096)
    # the paper's protocol: weights only, biases keep their initialisation
    no_bias = build_model("alexnet", num_classes=3, image_size=64, weights=path, load_biases=False)
    torch.testing.assert_close(no_bias.features[0].weight, src.features[0].weight)
    assert not torch.equal(no_bias.features[0].bias, src.features[0].bias)


def test_corrupt_or_foreign_weights_are_clear_errors(tmp_path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"bad\.pth"):
        build_model("alexnet", num_classes=3, image_size=64, weights=bad)
    foreign = tmp_path / "foreign.pth"
    torch.save({"something.weight": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match="same torchvision architecture"):
        build_model("alexnet", num_classes=3, image_size=64, weights=foreign)
    with pytest.raises(FileNotFoundError, match="missing"):
        load_weights_file(build_model("lenet"), tmp_path / "missing.pth")


def test_pretrained_download_offline_says_what_to_do(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr("torch.hub.load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match=r"weights='<path to the \.pth file>'"):
        build_model("alexnet", num_classes=3, image_size=64, pretrained=True)
    with pytest.raises(ValueError, match="not both"):
        build_model("alexnet", image_size=64, weights=tmp_path / "x.pth", pretrained=True)
