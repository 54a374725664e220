"""Resume at every phase: a run killed anywhere ends exactly like an uninterrupted one.

One run is killed (SIGKILL from inside the child process at a named phase, so nothing depends
on timing) and resumed again and again: mid-batch before any checkpoint, right after a step
checkpoint, on Ctrl-C, during validation, right after an epoch-end checkpoint, right after the
last batch of an epoch (the step where ``last.ckpt`` used to be written before validation),
during the test evaluation and while the final files are written. Then its metrics, weights,
best checkpoint, step count and per-epoch batch order must equal those of an uninterrupted run
of the same command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

CHILD = Path(__file__).with_name("engine_validity_child.py")
EPOCHS, STEPS_PER_EPOCH, EVERY = 2, 6, 3  # 60 training images / batch 10; checkpoints every 3
CONFIG = {
    "experiment": "phases",
    "data": {
        "dataset": "decoy_mnist",
        "variant": "color",
        "max_train": 90,
        "max_test": 30,
        "batch_size": 10,
        "folds": 3,
        "seed": 4,
    },
    # sampled weights: the result depends on the restored RNG state too
    "model": {"name": "lenet", "bayesian": True, "rho_init": -2.0},
    "guidance": [{"name": "bayes_feedback", "lam": 1.0e-4}],
    "optim": {"epochs": EPOCHS, "scheduler": "exponential", "gamma": 0.9},
    "trainer": {
        "checkpoint_every_n_steps": EVERY,
        "log_every_n_steps": 50,
        "progress_bar": False,
    },
    "evaluation": {"mc_samples": 2, "val_mc_samples": 2, "batch_size": 10},
}
# in the order they happen; each resumed process is killed at the next phase
PHASES = [
    "step:1",  # mid-batch, before the first checkpoint: starts over
    "ckpt:3",  # right after a mid-epoch step checkpoint
    "sigint:4",  # Ctrl-C
    "ckpt:6",  # right after the last batch of epoch 0 (validation not yet run)
    "val:0",  # during validation
    "epochend:0",  # right after the epoch-end checkpoint
    "test",  # during the test evaluation
    "report",  # while the final files are written
]


def _run(tmp: Path, run: str, log: Path, kill: str = "") -> subprocess.CompletedProcess[str]:
    config = tmp / "phases.yaml"
    if not config.exists():
        config.write_text(yaml.safe_dump(CONFIG))
    cmd = [sys.executable, str(CHILD), "train", str(config), "--quiet"]
    cmd += ["--set", f"runs_dir={tmp / 'runs'}", "--set", f"run={run}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env |= {"RF_TEST_KILL": kill, "RF_TEST_ORDER_LOG": str(log)}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _steps(log: Path) -> tuple[dict[int, dict], list[int]]:
    """Per global step the batch it trained on (a replayed step must see the same batch), and
    the epochs validated (in order, replays included)."""
    steps: dict[int, dict] = {}
    validated = []
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        rec.pop("rank", None)
        if "val" in rec:
            validated.append(rec["val"])
            continue
        step = rec.pop("step")
        assert steps.setdefault(step, rec) == rec, f"step {step} replayed on another batch"
        steps[step] = rec
    return steps, validated


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.mark.slow
def test_kill_at_every_phase_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    full_log, killed_log = tmp_path / "full.jsonl", tmp_path / "killed.jsonl"
    full = _run(tmp_path, "full", full_log)
    assert full.returncode == 0, full.stderr
    full_dir, run_dir = tmp_path / "runs" / "phases" / "full", tmp_path / "runs" / "phases" / "k"

    for phase in PHASES:
        got = _run(tmp_path, "k", killed_log, kill=phase)
        if phase.startswith("sigint"):
            assert got.returncode == 130, (phase, got.stderr)
            assert "run the same command again to resume" in got.stderr.lower()
        else:
            assert got.returncode == -9, (phase, got.returncode, got.stderr)
        assert not (run_dir / "metrics.json").exists(), phase
    done = _run(tmp_path, "k", killed_log)
    assert done.returncode == 0, done.stderr

    # same final metrics, weights, best checkpoint and step count
    expected = json.loads((full_dir / "metrics.json").read_text())
    assert json.loads((run_dir / "metrics.json").read_text()) == expected
    total = EPOCHS * STEPS_PER_EPOCH
    for name in ("timing.json",):
        assert json.loads((run_dir / name).read_text())["train_steps"] == total
    assert json.loads((full_dir / "timing.json").read_text())["train_steps"] == total
    for ckpt in ("last.ckpt", "best.ckpt"):
        a, b = _weights(full_dir / "checkpoints" / ckpt), _weights(run_dir / "checkpoints" / ckpt)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), ckpt

    # same batches in the same order in every epoch; epochs differ; every epoch validated
    full_steps, full_val = _steps(full_log)
    killed_steps, killed_val = _steps(killed_log)
    assert sorted(full_steps) == list(range(total))
    assert killed_steps == full_steps
    assert full_val == list(range(EPOCHS))
    assert sorted(set(killed_val)) == list(range(EPOCHS))
    orders = [
        [full_steps[e * STEPS_PER_EPOCH + b]["y"] for b in range(STEPS_PER_EPOCH)]
        for e in range(EPOCHS)
    ]
    assert [r["epoch"] for r in full_steps.values()] == [s // STEPS_PER_EPOCH for s in range(total)]
    assert orders[0] != orders[1], "both epochs used the same batch order"
    assert not list(run_dir.rglob(".*.tmp"))
