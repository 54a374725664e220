"""Decoy MNIST: patch size, positions, gray rules, masks, seeding (against a per-image loop)."""

from __future__ import annotations

import pytest
import torch

from rightfocus import DATASETS
from rightfocus.data.decoy_mnist import PAPER_POSITIONS, DecoyMNIST, make_decoy_mnist

N = 400


def _digits(n: int = N, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 8:20, 8:20] = torch.rand(n, 1, 12, 12, generator=g)  # ink only in the centre
    y = torch.arange(n) % 10
    return x, y


def _patch_box(variant: str, pos: int) -> tuple[slice, slice]:
    """The patch as slices, written out from the papers' descriptions."""
    if variant in ("color", "position"):
        boxes = [
            (slice(0, 4), slice(0, 4)),
            (slice(0, 4), slice(24, 28)),
            (slice(24, 28), slice(0, 4)),
            (slice(24, 28), slice(24, 28)),
            (slice(4, 8), slice(0, 4)),
            (slice(0, 4), slice(4, 8)),
            (slice(0, 4), slice(20, 24)),
            (slice(4, 8), slice(24, 28)),
            (slice(24, 28), slice(4, 8)),
            (slice(20, 24), slice(0, 4)),
        ]
        return boxes[pos]
    p = 5 if variant == "cdep" else 4
    corners = [(0, 0), (0, 28 - p), (28 - p, 0), (28 - p, 28 - p)]
    r, c = corners[pos]
    return slice(r, r + p), slice(c, c + p)


def _expected_gray(variant: str, train: bool, label: int, ds_gray_digit: int) -> float:
    if variant == "cdep":
        return (255 - 25 * label) / 255 if train else 25 * label / 255
    return (255 - 25 * ds_gray_digit) / 255


@pytest.mark.parametrize("variant", ["color", "position", "ross", "cdep"])
@pytest.mark.parametrize("train", [True, False])
def test_patch_size_position_gray_and_mask(variant: str, train: bool) -> None:
    x, y = _digits()
    ds = make_decoy_mnist(x, y, variant, train=train, seed=3)
    n_pos = 10 if variant in ("color", "position") else 4
    p = 5 if variant == "cdep" else 4
    assert ds.positions.min() >= 0 and ds.positions.max() < n_pos
    for i in range(N):
        img, label, mask = ds[i]
        rows, cols = _patch_box(variant, int(ds.positions[i]))
        patch = torch.zeros(1, 28, 28, dtype=torch.bool)
        patch[0, rows, cols] = True
        assert int(patch.sum()) == p * p
        gray = img[patch]
        assert torch.all(gray == gray[0])
        # the digit is untouched outside the patch
        assert torch.equal(img[~patch], x[i][~patch])
        # gray value rules
        v = round((255 - float(gray[0]) * 255) / 25)
        if variant in ("color", "ross") and train:
            assert v == int(label)
        if variant == "cdep":
            assert float(gray[0]) == pytest.approx(_expected_gray(variant, train, int(label), 0))
        else:
            assert float(gray[0]) == pytest.approx((255 - 25 * v) / 255) and 0 <= v <= 9
        # the mask: the patch itself, or all four corners for cdep
        if variant == "cdep":
            corners = torch.zeros(1, 28, 28)
            for k in range(4):
                r, c = _patch_box("cdep", k)
                corners[0, r, c] = 1
            assert torch.equal(mask, corners)
        else:
            assert torch.equal(mask, patch.float())
    assert ds.images.min() >= 0 and ds.images.max() <= 1
    assert ds.images.dtype == ds.masks.dtype == torch.float32


def test_position_follows_label_in_train_and_is_random_in_test() -> None:
    x, y = _digits()
    train = make_decoy_mnist(x, y, "position", train=True, seed=0)
    assert torch.equal(train.positions, y)
    # train gray is not the label (random): many mismatches
    assert (train.gray != (255 - 25 * y.float()) / 255).float().mean() > 0.5
    test = make_decoy_mnist(x, y, "position", train=False, seed=0)
    assert (test.positions != y).float().mean() > 0.7
    assert set(test.positions.tolist()) == set(range(10))


@pytest.mark.parametrize("variant", ["color", "ross"])
def test_test_gray_is_random_not_label(variant: str) -> None:
    x, y = _digits()
    test = make_decoy_mnist(x, y, variant, train=False, seed=0)
    v = torch.round((255 - test.gray * 255) / 25).long()
    assert (v != y).float().mean() > 0.7
    assert set(v.tolist()) == set(range(10))
    assert set(test.positions.tolist()) == set(range(10 if variant == "color" else 4))


def test_positions_are_the_papers() -> None:
    assert len(PAPER_POSITIONS) == 10
    masks = torch.stack([make_decoy_mnist(*_digits(10), "position").masks[i] for i in range(10)])
    # the 10 positions do not overlap and all lie in the 8-pixel border
    assert torch.equal(masks.sum(0).max(), torch.tensor(1.0))
    assert masks[:, :, 8:20, 8:20].sum() == 0


def test_same_seed_identical_different_seed_differs() -> None:
    x, y = _digits()
    for variant in ("color", "position", "ross", "cdep"):
        a = make_decoy_mnist(x, y, variant, seed=5)
        b = make_decoy_mnist(x, y, variant, seed=5)
        c = make_decoy_mnist(x, y, variant, seed=6)
        assert a.images.numpy().tobytes() == b.images.numpy().tobytes()
        assert a.masks.numpy().tobytes() == b.masks.numpy().tobytes()
        assert not torch.equal(a.images, c.images)


def test_clean_view_and_registry_factory_on_bundled_digits() -> None:
    factory = DATASETS.get("decoy_mnist")
    meta = DATASETS.metadata("decoy_mnist")
    assert meta["mask_pool"] == "max" and meta["num_classes"] == 10 and meta["has_masks"]
    tr = factory(split="train", variant="color", seed=0)
    te = factory(split="test", variant="color", seed=0)
    assert isinstance(tr, DecoyMNIST) and len(tr) == 4000 and len(te) == 1000
    outside = tr.masks == 0
    assert torch.equal(tr.images[outside], tr.clean[outside])
    # the test digits do not depend on the decoy seed
    te2 = factory(split="test", variant="color", seed=1)
    assert torch.equal(te.clean, te2.clean) and not torch.equal(te.images, te2.images)
    small = factory(split="test", variant="ross", image_size=14)
    assert small[0][0].shape == (1, 14, 14) and set(small.masks.unique().tolist()) <= {0.0, 1.0}


def test_bad_input() -> None:
    x, y = _digits(10)
    with pytest.raises(ValueError, match="variant"):
        make_decoy_mnist(x, y, "colour")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        make_decoy_mnist(x * 255, y)
    with pytest.raises(ValueError, match="labels"):
        make_decoy_mnist(x, y[:5])
    with pytest.raises(ValueError, match="split"):
        DATASETS.get("decoy_mnist")(split="val")
    with pytest.raises(ValueError, match=r"Known datasets: .*decoy_mnist"):
        DATASETS.get("decoy_minst")
