"""Image loaders with masks, on tiny fixtures written in each dataset's real on-disk format."""

from __future__ import annotations

import inspect
import urllib.error
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from rightfocus import DATASETS
from rightfocus.data import PairedTransform
from rightfocus.data.transforms import IMAGENET_NORMALIZATION

RAW = dict(native_size=True, normalization=None)  # no resize/normalisation: exact pixel checks


def _rgb(path: Path, h: int = 20, w: int = 24, seed: int = 0) -> np.ndarray:
    arr = np.random.default_rng(seed).integers(0, 200, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return arr


def _png_mask(path: Path, mask: np.ndarray, scale: int = 255) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((mask * scale).astype(np.uint8), mode="L").save(path)


def _box(h: int = 20, w: int = 24) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    m[2:7, 3:10] = 1
    return m


# ------------------------------------------------------------------ ISIC (CDEP layout)


def test_isic_layout_split_masks_and_weights(tmp_path: Path, write_dataset: Any) -> None:
    write_dataset("isic", tmp_path)
    tr = DATASETS.get("isic")(split="train", root=str(tmp_path), image_size=16)
    te = DATASETS.get("isic")(split="test", root=str(tmp_path), image_size=16)
    names = {f.name for f in tr.files} | {f.name for f in te.files}
    assert len(names) == 8 and not {f.name for f in tr.files} & {f.name for f in te.files}
    assert len(te) == round(0.4 * 5) + round(0.4 * 3)
    for ds in (tr, te):
        for i in range(len(ds)):
            x, y, m = ds[i]
            assert x.shape == (3, 16, 16) and m.shape == (1, 16, 16) and x.dtype == torch.float32
            assert y == (1 if ds.files[i].parent.name == "malignant" else 0)
            has_seg = ds.files[i].stem in {"ISIC_0000000", "ISIC_0000001", "ISIC_0000002"}
            assert (m.sum() > 0) == has_seg and set(m.unique().tolist()) <= {0.0, 1.0}
    counts = np.bincount(tr.targets)
    assert tr.class_weights.tolist() == pytest.approx([1.0, counts[0] / counts[1]])
    # ImageNet normalisation by default
    x0 = tr[0][0]
    raw = DATASETS.get("isic")(
        split="train", root=str(tmp_path), image_size=16, normalization=None
    )[0][0]
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in IMAGENET_NORMALIZATION)
    assert torch.allclose(x0, (raw - mean) / std, atol=1e-5)


def test_isic_missing_class_folder_and_empty(tmp_path: Path) -> None:
    _rgb(tmp_path / "benign" / "a.jpg")
    with pytest.raises(ValueError, match=r"missing class folder.*malignant"):
        DATASETS.get("isic")(root=str(tmp_path))
    (tmp_path / "malignant").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        DATASETS.get("isic")(root=str(tmp_path))


# ------------------------------------------------------------------ Oxford-IIIT-Pet


def test_oxford_pet_mask_is_background(tmp_path: Path, write_dataset: Any) -> None:
    trimaps = write_dataset("oxford_pet", tmp_path)
    ds = DATASETS.get("oxford_pet")(split="train", root=str(tmp_path), **RAW)
    assert len(ds) == 2 and ds.targets == [0, 1] and ds.classes[1] == "American Bulldog"
    for i, name in enumerate(["Abyssinian_1", "american_bulldog_10"]):
        _, _, m = ds[i]
        assert torch.equal(m[0], torch.from_numpy((trimaps[name] == 2).astype(np.float32)))
        assert float(m[0, 0, 0]) == 1.0 and float(m[0, 10, 10]) == 0.0 and float(m[0, 4, 10]) == 0.0
    assert DATASETS.metadata("oxford_pet")["mask_pool"] == "min"
    assert (
        len(DATASETS.get("oxford_pet")(split="test", root=str(tmp_path / "oxford-iiit-pet"))) == 1
    )


def test_oxford_pet_corrupt_trimap_and_image_name_the_file(
    tmp_path: Path, write_dataset: Any
) -> None:
    write_dataset("oxford_pet", tmp_path)
    base = tmp_path / "oxford-iiit-pet"
    tri = base / "annotations" / "trimaps" / "Abyssinian_1.png"
    tri.write_bytes(tri.read_bytes()[:20])
    img = base / "images" / "american_bulldog_10.jpg"
    img.write_bytes(b"not a jpeg")
    ds = DATASETS.get("oxford_pet")(split="train", root=str(tmp_path), **RAW)
    with pytest.raises(ValueError, match=r"trimap file .*Abyssinian_1\.png cannot be read"):
        ds[0]
    with pytest.raises(ValueError, match=r"image file .*american_bulldog_10\.jpg cannot be read"):
        ds[1]


def test_oxford_pet_missing_and_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="download=True"):
        DATASETS.get("oxford_pet")(root=str(tmp_path))
    import torchvision.datasets.oxford_iiit_pet as pet

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(pet, "download_and_extract_archive", offline)
    with pytest.raises(RuntimeError, match="offline"):
        DATASETS.get("oxford_pet")(root=str(tmp_path), download=True)


# ------------------------------------------------------------------ SBD


def test_sbd_keeps_single_subset_class_and_masks_the_rest(
    tmp_path: Path, write_dataset: Any
) -> None:
    from torchvision.datasets import SBDataset

    write_dataset("sbd", tmp_path)
    # our fixture is read by torchvision itself: the .mat structure is the real one
    tv = SBDataset(str(tmp_path), image_set="train", mode="segmentation")
    assert np.asarray(tv[0][1])[3, 3] == 3
    ds = DATASETS.get("sbd")(split="train", root=str(tmp_path), **RAW)
    assert [f.stem for f in ds.files] == ["2008_000002", "2008_000003"]
    assert ds.targets == [ds.classes.index("bird"), ds.classes.index("cat")]
    _, _, m = ds[1]
    expect = torch.ones(20, 24)
    expect[2:8, 2:9] = 0  # only the cat is free; the person is masked too
    assert torch.equal(m[0], expect)


def test_sbd_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no SBD files"):
        DATASETS.get("sbd")(root=str(tmp_path))


# ------------------------------------------------------------------ masked_folder / image_folder


def test_masked_folder_reads_masks_and_zero_for_missing(tmp_path: Path, write_dataset: Any) -> None:
    write_dataset("masked_folder", tmp_path)
    ds = DATASETS.get("masked_folder")(split="test", root=str(tmp_path), **RAW)
    assert ds.classes == ["cat", "dog"] and ds.targets == [0, 0, 1, 1]
    assert torch.equal(ds[0][2][0], torch.from_numpy(_box()).float())
    assert float(ds[1][2].sum()) == 0.0
    img = np.asarray(Image.open(tmp_path / "test" / "images" / "cat" / "cat0.png"))
    assert torch.allclose(ds[0][0], torch.from_numpy(img.copy()).permute(2, 0, 1).float() / 255)
    with pytest.raises(ValueError, match="no mask file"):
        DATASETS.get("masked_folder")(root=str(tmp_path), require_masks=True)


def test_image_folder_zero_masks(tmp_path: Path) -> None:
    for cls in ("a", "b", "c"):
        _rgb(tmp_path / cls / "x.jpg")
    ds = DATASETS.get("image_folder")(root=str(tmp_path), image_size=8)
    assert len(ds) == 3 and ds.targets == [0, 1, 2]
    x, y, m = ds[2]
    assert x.shape == (3, 8, 8) and y == 2 and m.shape == (1, 8, 8) and float(m.sum()) == 0
    with pytest.raises(ValueError, match="no test folder"):
        DATASETS.get("image_folder")(split="test", root=str(tmp_path))


def test_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class folders"):
        DATASETS.get("image_folder")(root=str(tmp_path / "empty"))
    (tmp_path / "empty" / "cls").mkdir()
    with pytest.raises(ValueError, match=r"class folder .*cls holds no images"):
        DATASETS.get("image_folder")(root=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="missing class folder"):
        DATASETS.get("image_folder")(root=str(tmp_path / "empty"), classes=["cls", "dog"])
    with pytest.raises(ValueError, match="does not exist"):
        DATASETS.get("image_folder")(root=str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="cannot download"):
        DATASETS.get("masked_folder")(root=str(tmp_path), download=True)


def test_bad_masks(tmp_path: Path) -> None:
    _rgb(tmp_path / "images" / "c" / "a.png")
    _png_mask(tmp_path / "masks" / "c" / "a.png", _box(10, 12))  # wrong size
    ds = DATASETS.get("masked_folder")(root=str(tmp_path), **RAW)
    with pytest.raises(ValueError, match=r"mask .*c/a\.png is 12x10 pixels but its image"):
        ds[0]
    soft = _box().astype(np.float64) * 0.8 + 0.1  # values 0.1 / 0.9
    np.save(tmp_path / "masks" / "c" / "a.npy", soft)
    (tmp_path / "masks" / "c" / "a.png").unlink()
    ds = DATASETS.get("masked_folder")(root=str(tmp_path), **RAW)
    with pytest.raises(ValueError, match="mask_threshold"):
        ds[0]
    ds = DATASETS.get("masked_folder")(root=str(tmp_path), mask_threshold=0.5, **RAW)
    assert torch.equal(ds[0][2][0], torch.from_numpy(_box()).float())


def test_unknown_dataset_lists_known() -> None:
    with pytest.raises(ValueError, match=r"Unknown dataset 'isci'.*Known datasets: .*oxford_pet"):
        DATASETS.get("isci")


@pytest.mark.parametrize("name", ["isic", "oxford_pet", "sbd", "masked_folder", "image_folder"])
def test_factories_share_the_registry_signature_and_root_check(name: str) -> None:
    """Every file-based factory takes the registry's common arguments and says what root= must
    hold when it is missing; the ones that read only your files refuse download=True."""
    factory = DATASETS.get(name)
    params = list(inspect.signature(factory).parameters)
    assert params == ["split", "root", "seed", "image_size", "download", "options"]
    with pytest.raises(ValueError, match=rf"{name} needs root= \S"):
        factory()
    if name in ("isic", "masked_folder", "image_folder"):
        with pytest.raises(ValueError, match="download"):
            factory(root="anywhere", download=True)
    assert DATASETS.metadata(name)["in_channels"] == 3


# ------------------------------------------------------------------ paired transform alignment


def test_crop_flip_keeps_mask_aligned() -> None:
    h = w = 32
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[..., 1] = 80  # green background, distinct from the zero padding
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[3:9, 20:30] = 1  # asymmetric: a flip moves it
    img[mask == 1] = (255, 0, 0)
    t = PairedTransform(image_size=w, normalization=None, augment="crop_flip")
    moved = 0
    for seed in range(12):
        torch.manual_seed(seed)
        x, m = t(Image.fromarray(img), mask)
        red = (x[0] == 1.0) & (x[1] == 0.0)
        assert torch.equal(m[0].bool(), red)  # the known pixels travel together
        moved += int(not torch.equal(m[0], torch.from_numpy(mask).float()))
    assert moved > 0
    # with resizing, masks stay binary (nearest) and cover the red block's centre
    t2 = PairedTransform(image_size=64, normalization=None)
    x, m = t2(Image.fromarray(img), mask)
    assert set(m.unique().tolist()) == {0.0, 1.0} and float(m[0, 12, 50]) == 1.0
    assert float(x[0, 12, 50]) == pytest.approx(1.0)


def test_transform_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="augment"):
        PairedTransform(augment="mixup")
    with pytest.raises(ValueError, match="image_size"):
        PairedTransform(image_size=0)
