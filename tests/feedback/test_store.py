"""The feedback store: pixel-exact round trip, versions, conflicts, validation, kill safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rightfocus.data.base import MaskedTensorDataset
from rightfocus.data.feedback import FeedbackOverlay
from rightfocus.feedback.store import (
    ConflictError,
    FeedbackStore,
    MaskError,
    image_sha256,
    validate_mask,
)


def _mask(seed: int, shape: tuple[int, int] = (13, 17)) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) > 0.5).astype(np.uint8)


def test_round_trip_is_pixel_exact_and_versioned(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "s", pool={"dataset": "x"})
    m1, m2, right = _mask(0), _mask(1), _mask(2)
    r1 = store.save(4, m1, base_version=0, image_sha256="abc", who="ann", strategy="random")
    r2 = store.save(4, m2, base_version=1, image_sha256="abc", who="bob", right=right)
    loaded, rec = store.load(4)
    assert np.array_equal(loaded, m2) and loaded.dtype == np.uint8
    assert (r1.version, r2.version, rec.version, rec.who, rec.shape) == (1, 2, 2, "bob", (13, 17))
    assert np.array_equal(store.load_right(4), right)
    assert np.array_equal(store.load_version(4, 1), m1)
    assert [h.version for h in store.history(4)] == [1, 2]
    assert store.indices() == [4] and store.load(5) is None and store.version(5) == 0
    with pytest.raises(ValueError, match="another training pool"):
        FeedbackStore(tmp_path / "s", pool={"dataset": "y"})


def test_conflict_leaves_the_first_save(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path)
    store.save(1, _mask(0), base_version=0, image_sha256="a", who="first")
    with pytest.raises(ConflictError, match="saved by first") as info:
        store.save(1, _mask(1), base_version=0, image_sha256="a", who="second")
    assert info.value.current["version"] == 1
    assert np.array_equal(store.load(1)[0], _mask(0))
    assert len(store.history(1)) == 1


@pytest.mark.parametrize(
    ("mask", "match"),
    [
        (np.zeros((13, 17), np.float32), "dtype"),
        (np.zeros((13, 16), np.uint8), "shape"),
        (np.full((13, 17), 2, np.uint8), "values must be 0 or 1"),
        (np.full((13, 17), -1, np.int64), "values must be 0 or 1"),
    ],
)
def test_invalid_masks_are_refused(mask: np.ndarray, match: str) -> None:
    with pytest.raises(MaskError, match=match):
        validate_mask(mask, (13, 17))


def test_a_failed_write_keeps_the_old_mask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    store = FeedbackStore(tmp_path)
    store.save(0, _mask(0), base_version=0, image_sha256="a")
    real = Image.Image.save

    def broken(self, fp, *a, **k):  # type: ignore[no-untyped-def]
        real(self, fp, *a, **k)
        Path(fp).write_bytes(Path(fp).read_bytes()[:20])  # half-written
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        store.save(0, _mask(1), base_version=1, image_sha256="a")
    monkeypatch.undo()
    assert np.array_equal(store.load(0)[0], _mask(0))
    assert not list(tmp_path.rglob("*.tmp"))


# The writer loads store.py (and _io.py) without the rest of the package, so it starts in well
# under a second (importing torch would take most of the test's time).
_WRITER = textwrap.dedent(
    """
    import importlib.util, sys, types, numpy as np
    pkg = types.ModuleType("rightfocus")
    pkg.__path__ = [sys.argv[2]]
    sys.modules["rightfocus"] = pkg
    spec = importlib.util.spec_from_file_location("rf_store", sys.argv[2] + "/feedback/store.py")
    mod = sys.modules["rf_store"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    store = mod.FeedbackStore(sys.argv[1])
    masks = [np.zeros((64, 64), np.uint8), np.ones((64, 64), np.uint8)]
    v = store.version(0)
    print("ready", flush=True)
    while True:
        store.save(0, masks[v % 2], base_version=v, image_sha256="a")
        v += 1
    """
)


_PACKAGE = str(Path(__import__("rightfocus").__file__).parent)


def test_killed_writer_leaves_old_or_new_mask(tmp_path: Path) -> None:
    """SIGKILL a process that saves in a loop, 4 times at random moments: the mask on disk is
    always a complete version (all 0 or all 1) whose record matches its pixels."""
    rng = np.random.default_rng(0)
    for _ in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path), _PACKAGE], stdout=subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(float(rng.uniform(0.05, 0.3)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        loaded = FeedbackStore(tmp_path).load(0)
        if loaded is None:
            continue
        mask, rec = loaded
        assert mask.min() == mask.max(), "a partial mask was left on disk"
        assert int(mask[0, 0]) == (rec.version - 1) % 2
    assert FeedbackStore(tmp_path).version(0) > 0


def test_overlay_reads_the_store(tmp_path: Path) -> None:
    x = torch.rand(6, 1, 13, 17)
    ds = MaskedTensorDataset(x, torch.arange(6), torch.ones(6, 1, 13, 17))
    store = FeedbackStore(tmp_path)
    store.save(2, _mask(3), base_version=0, image_sha256=image_sha256(x[2]))
    overlay = FeedbackOverlay(ds, tmp_path)
    assert torch.equal(overlay[2][2], torch.from_numpy(_mask(3)).float()[None])
    assert torch.equal(overlay[0][2], torch.zeros(1, 13, 17))  # not annotated: no feedback
    assert torch.equal(overlay[2][0], x[2]) and len(overlay) == 6
    store.save(3, _mask(4), base_version=0, image_sha256="not-this-image")
    with pytest.raises(ValueError, match="different image"):
        FeedbackOverlay(ds, tmp_path)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        FeedbackOverlay(ds, tmp_path / "missing")
    small = FeedbackStore(tmp_path / "b")
    small.save(9, _mask(5), base_version=0, image_sha256="")
    with pytest.raises(ValueError, match="pool has 6 images"):
        FeedbackOverlay(ds, small)


def test_config_option_feeds_the_training_pool(tmp_path: Path) -> None:
    from rightfocus.engine.config import load_config_dict
    from rightfocus.engine.datamodule import ExperimentData, build_dataset

    raw = {
        "data": {
            "dataset": "decoy_mnist",
            "variant": "position",
            "max_train": 20,
            "folds": 1,
            "feedback_fraction": 1.0,
        },
        "model": {"name": "lenet"},
    }
    base = build_dataset(load_config_dict(raw), "train")
    x = base[5][0]
    store = FeedbackStore(tmp_path)
    m = np.zeros((28, 28), np.uint8)
    m[10:12, 3:9] = 1
    store.save(5, m, base_version=0, image_sha256=image_sha256(x))
    cfg = load_config_dict(raw, [f"data.options.feedback_store={tmp_path}"])
    dm = ExperimentData(cfg)
    dm.setup("fit")
    masks = torch.stack([dm.train_dataset[i][2] for i in range(20)])
    assert torch.equal(masks[5, 0], torch.from_numpy(m).float())
    assert float(masks.sum()) == float(m.sum())  # the decoy masks of the others are gone
