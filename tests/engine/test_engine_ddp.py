"""DDP: two CPU processes (gloo) complete a tiny run and match the one-process metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

CHILD = Path(__file__).with_name("engine_cli_child.py")


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one(tmp_path: Path) -> None:
    cfg = {
        "experiment": "ddp",
        "runs_dir": str(tmp_path / "runs"),
        "data": {
            "dataset": "decoy_mnist",
            "variant": "color",
            "max_train": 300,
            "max_test": 100,
            "batch_size": 50,
            "folds": 3,
        },
        "model": {"name": "lenet"},
        "optim": {"epochs": 2, "lr": 3e-3},
        "trainer": {"accelerator": "cpu", "progress_bar": False, "log_every_n_steps": 2},
    }
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, str(CHILD), "train", str(config)]
    two = subprocess.run(
        [*base, "--set", "run=two", "--set", "trainer.devices=2", "--set", "trainer.strategy=ddp"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr
    assert "MEMBER: 2/2" in two.stdout + two.stderr  # two processes joined the process group
    one = subprocess.run(
        [*base, "--quiet", "--set", "run=one"], env=env, capture_output=True, text=True, timeout=600
    )
    assert one.returncode == 0, one.stderr
    runs = tmp_path / "runs" / "ddp"
    m2 = json.loads((runs / "two" / "metrics.json").read_text())
    m1 = json.loads((runs / "one" / "metrics.json").read_text())
    assert set(m1) == set(m2)
    # each global batch is split across the ranks and gradients averaged: same training up to
    # floating-point summation order
    assert m2 == pytest.approx(m1, abs=2e-3)
