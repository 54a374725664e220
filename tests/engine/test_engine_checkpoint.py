"""Checkpoints: atomic saves, clear errors for truncated/tampered files, pickles refused."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rightfocus.engine.checkpoint import (
    AtomicCheckpointIO,
    CheckpointError,
    ResumeCheckpoint,
    load_checkpoint,
    remove_stale_temp_files,
    rng_state,
    set_rng_state,
)
from rightfocus.engine.datamodule import EpochBatchSampler


class _Payload:
    """Unpickling this would create a file (it must never run)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (Path(self.marker),))


def _save(tmp_path: Path) -> Path:
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.arange(6.0)}, "epoch": 1}, path)
    return path


def test_atomic_save_roundtrip_leaves_no_temp_file(tmp_path: Path) -> None:
    path = _save(tmp_path)
    loaded = AtomicCheckpointIO().load_checkpoint(path)
    assert torch.equal(loaded["state_dict"]["w"], torch.arange(6.0)) and loaded["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_truncated_checkpoint_gives_clear_error(tmp_path: Path) -> None:
    path = _save(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated or corrupt.*Delete it"):
        load_checkpoint(path)


def test_tampered_bytes_give_clear_error(tmp_path: Path) -> None:
    path = _save(tmp_path)
    data = bytearray(path.read_bytes())
    data[-22:] = b"\x00" * 22  # the zip's end-of-central-directory record
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_pickled_payload_is_refused_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "extra": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointError, match="contains pickled code, refused for safety") as err:
        load_checkpoint(path)
    assert "weights_only=False" not in str(err.value)
    assert not marker.exists()


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.ckpt")


def test_stale_temp_files_removed(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    stale = tmp_path / "checkpoints" / ".last.ckpt.abc123.tmp"
    stale.write_bytes(b"partial")
    keep = tmp_path / "checkpoints" / "last.ckpt"
    keep.write_bytes(b"x")
    assert remove_stale_temp_files(tmp_path) == [stale]
    assert keep.exists() and not stale.exists()


def test_rng_state_roundtrip_through_weights_only(tmp_path: Path) -> None:
    import random

    import numpy as np

    torch.manual_seed(1)
    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = (torch.rand(3), random.random(), np.random.rand())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert torch.equal(torch.rand(3), expected[0])
    assert random.random() == expected[1] and np.random.rand() == expected[2]


def test_epoch_batch_sampler_order_depends_on_seed_and_epoch_and_skips() -> None:
    s = EpochBatchSampler(10, 4, seed=5)
    s.set_epoch(2)
    full = list(s)
    assert [len(b) for b in full] == [4, 4, 2]
    assert sorted(i for b in full for i in b) == list(range(10))
    s.set_epoch(2)
    s.skip = 1
    assert list(s) == full[1:]
    assert list(s) == full  # skip is used once
    s.set_epoch(3)
    assert list(s) != full
    ranks = [list(EpochBatchSampler(10, 4, seed=5, rank=r, world_size=2)) for r in (0, 1)]
    for r in ranks:
        r_sampler = EpochBatchSampler(10, 4, seed=5)
        assert len(r) == len(r_sampler)
    merged = [sorted(a + b) for a, b in zip(ranks[0], ranks[1], strict=True)]
    assert merged == [sorted(b) for b in EpochBatchSampler(10, 4, seed=5)]


def test_resume_checkpoint_saves_n_steps_after_its_last_save_and_at_epoch_ends(
    tmp_path: Path,
) -> None:
    """Epochs of 5 steps, every_n_steps 7: mid-epoch saves only when 7 steps have passed since
    the previous save (epoch ends included), never after an epoch's last batch."""
    saved: list[int] = []
    current = SimpleNamespace(processed=0, completed=0)
    progress = SimpleNamespace(current=current, is_last_batch=False)
    trainer = SimpleNamespace(
        global_step=0,
        num_training_batches=5,
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)),
    )
    trainer.save_checkpoint = lambda path, weights_only: saved.append(trainer.global_step)
    callback = ResumeCheckpoint(tmp_path, every_n_steps=7)
    callback.on_train_start(trainer, None)  # type: ignore[arg-type]
    for _epoch in range(4):
        for b in range(5):
            trainer.global_step += 1
            current.processed = b + 1
            progress.is_last_batch = b == 4
            callback.on_train_batch_end(trainer)  # type: ignore[arg-type]
        callback.on_train_epoch_end(trainer, None)  # type: ignore[arg-type]
    assert saved == [5, 10, 15, 20]  # 5-step epochs never reach 7 steps since a save
    saved.clear()
    callback = ResumeCheckpoint(tmp_path, every_n_steps=2)
    trainer.global_step = 20  # resumed from the checkpoint of step 20
    callback.on_train_start(trainer, None)  # type: ignore[arg-type]
    for b in range(5):
        trainer.global_step += 1
        current.processed = b + 1
        progress.is_last_batch = b == 4
        callback.on_train_batch_end(trainer)  # type: ignore[arg-type]
    callback.on_train_epoch_end(trainer, None)  # type: ignore[arg-type]
    assert saved == [22, 24, 25]  # not after the last batch (25) until the epoch end
