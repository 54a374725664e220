"""Kill-and-resume: a SIGKILLed run continues and ends exactly like an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

CHILD = Path(__file__).with_name("engine_cli_child.py")

CONFIG = {
    "experiment": "resume",
    "data": {
        "dataset": "decoy_mnist",
        "variant": "color",
        "max_train": 450,
        "max_test": 100,
        "batch_size": 30,
        "folds": 3,
        "seed": 3,
    },
    # Bayesian model + feedback: sampled weights make the result depend on the restored RNG
    "model": {"name": "lenet", "bayesian": True, "rho_init": -2.0},
    "guidance": [{"name": "bayes_feedback", "lam": 5.0e-5}],
    "optim": {"epochs": 3, "scheduler": "exponential", "gamma": 0.9},
    "trainer": {"checkpoint_every_n_steps": 2, "log_every_n_steps": 5, "progress_bar": False},
    "evaluation": {"mc_samples": 3},
}
STEPS_PER_EPOCH = 10  # 300 training images / batch 30


def _command(config: Path, runs: Path, run: str) -> list[str]:
    return [
        sys.executable,
        str(CHILD),
        "train",
        str(config),
        "--quiet",
        "--set",
        f"runs_dir={runs}",
        "--set",
        f"run={run}",
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _last_step(ckpt: Path) -> int:
    try:
        return int(torch.load(ckpt, weights_only=True)["global_step"])
    except Exception:  # not there yet
        return -1


def _train_and_kill(cmd: list[str], ckpt: Path, after_step: int) -> int:
    """Start training, SIGKILL it once last.ckpt reached ``after_step``; returns that step."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise AssertionError(
                    f"training ended before the kill (code {proc.returncode}):\n{err}"
                )
            step = _last_step(ckpt)
            if step >= after_step:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return step
            time.sleep(0.01)
        raise AssertionError("no checkpoint appeared in time")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _check_complete_files(run_dir: Path) -> None:
    """Every visible file is complete: config parses, checkpoints load (weights_only)."""
    for path in run_dir.rglob("*"):
        if not path.is_file() or (path.name.startswith(".") and path.name.endswith(".tmp")):
            continue
        if path.suffix == ".ckpt":
            assert isinstance(torch.load(path, weights_only=True), dict), path
        elif path.suffix == ".yaml":
            assert yaml.safe_load(path.read_text()), path
        elif path.suffix == ".json":
            json.loads(path.read_text())


@pytest.mark.slow
def test_sigkill_twice_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    config = tmp_path / "resume.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    runs = tmp_path / "runs"

    full = subprocess.run(_command(config, runs, "full"), env=_env(), capture_output=True)
    assert full.returncode == 0, full.stderr.decode()
    expected = json.loads((runs / "resume" / "full" / "metrics.json").read_text())

    run_dir = runs / "resume" / "killed"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    cmd = _command(config, runs, "killed")
    first = _train_and_kill(cmd, ckpt, after_step=4)  # inside epoch 0
    _check_complete_files(run_dir)
    assert not (run_dir / "metrics.json").exists()
    second = _train_and_kill(cmd, ckpt, after_step=first + 9)  # a later point, epoch 1 or 2
    assert second > first
    _check_complete_files(run_dir)

    done = subprocess.run(cmd, env=_env(), capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    got = json.loads((run_dir / "metrics.json").read_text())
    assert got == expected
    assert torch.load(ckpt, weights_only=True)["global_step"] == 3 * STEPS_PER_EPOCH
    assert not list(run_dir.rglob(".*.tmp")), "a temporary file was left behind"
    _check_complete_files(run_dir)
