"""Two ``rightfocus sweep`` workers share one study on a real PostgreSQL server; one is
SIGKILLed mid-trial, the other retries its trial, which resumes from its checkpoint.

The server is a throw-away ``initdb`` cluster in a temporary folder on a free port (unix
socket in that folder), run as an unprivileged user (``postgres``/``nobody`` via ``runuser``
when the tests run as root). Needs the Debian ``postgresql`` package
(``scripts/system-deps.sh``); skipped without it, unless ``CI`` is set.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch

from rightfocus.engine.sweep import KEY, Trial, storage_url

pytestmark = pytest.mark.slow

BASE = """\
experiment: base
data: {dataset: decoy_mnist, variant: color, max_train: 240, max_test: 20, batch_size: 8,
       folds: 2}
model: {name: lenet}
optim: {epochs: 2}
trainer: {progress_bar: false, checkpoint_every_n_steps: 1, log_every_n_steps: 1}
evaluation: {metrics: [accuracy, balanced_accuracy], mc_samples: 1}
"""
SWEEP = """\
config: base.yaml
params:
  optim.lr: [1e-3, 2e-3]
heartbeat_interval: 1
grace_period: 4
"""


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the PostgreSQL test must run)")
    pytest.skip(reason)


def _postgres_bin() -> Path:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if not found:
        _missing(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): install "
            "the Debian package postgresql (scripts/system-deps.sh does)"
        )
    return found[-1].parent


def _unprivileged() -> tuple[list[str], int, int]:
    """The command prefix that runs as an unprivileged user (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return [], os.getuid(), os.getgid()
    runuser = shutil.which("runuser")
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        if runuser:
            return [runuser, "-u", name, "--"], user.pw_uid, user.pw_gid
    _missing("running as root without runuser or a postgres/nobody user to run PostgreSQL")
    raise AssertionError  # unreachable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    bindir = _postgres_bin()
    as_user, uid, gid = _unprivileged()
    # the server's user must be able to reach its folder: /tmp when TMPDIR is private
    parent = Path(tempfile.gettempdir())
    if as_user and not all(os.stat(p).st_mode & 0o001 for p in [parent, *parent.parents]):
        parent = Path("/tmp")
    root = Path(tempfile.mkdtemp(prefix="rightfocus-pg-", dir=parent))
    os.chown(root, uid, gid)
    data, port = root / "data", _free_port()
    ctl = [*as_user, str(bindir / "pg_ctl"), "-D", str(data)]
    started = False
    try:
        subprocess.run(
            [*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "rf", "-A", "trust", "-N"],
            check=True,
            capture_output=True,
        )
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            [*ctl, "-l", str(root / "server.log"), "-o", options, "-w", "-t", "60", "start"],
            check=True,
            capture_output=True,
        )
        started = True
        yield f"postgresql://rf@127.0.0.1:{port}/postgres"
    finally:
        if started:
            subprocess.run([*ctl, "-m", "immediate", "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


class _Worker:
    """A ``rightfocus sweep`` process whose output lines are collected by a thread."""

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def trial_names(self) -> list[str]:
        out = []
        for line in list(self.lines):  # "trial 3: <run name>" when a trial starts
            head, _, name = line.partition(": ")
            started = not name.startswith(("validation", "not recorded"))
            if head.startswith("trial ") and head[6:].isdigit() and started:
                out.append(name)
        return out


def _first_logged_step(events: Path) -> int:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
    acc.Reload()
    if "train/loss" not in acc.Tags()["scalars"]:
        return -1
    return min(e.step for e in acc.Scalars("train/loss"))


def test_two_workers_on_postgres_one_killed_mid_trial(tmp_path: Path, postgres_url: str) -> None:
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    out = tmp_path / "sweep"
    exe = Path(sys.executable).with_name("rightfocus")
    cmd = [str(exe), "sweep", str(tmp_path / "sweep.yaml"), "--out", str(out)]
    cmd += ["--storage", postgres_url]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    workers = [_Worker(cmd, env), _Worker(cmd, env)]
    runs = out / "runs" / "sweep"

    victim, killed_run, step = None, None, 0
    deadline = time.time() + 300
    try:
        while victim is None and time.time() < deadline:  # kill a worker mid-trial
            for w in workers:
                for name in w.trial_names():
                    ckpt = runs / name / "checkpoints" / "last.ckpt"
                    if ckpt.is_file() and not (runs / name / "metrics.json").exists():
                        victim, killed_run = w, runs / name
            time.sleep(0.02)
        assert victim is not None and killed_run is not None, [w.lines for w in workers]
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        ckpt = torch.load(killed_run / "checkpoints" / "last.ckpt", weights_only=True)
        step = int(ckpt["global_step"])
        assert step >= 1 and not (killed_run / "metrics.json").exists()  # killed mid-trial

        survivor = next(w for w in workers if w is not victim)
        assert survivor.proc.wait(timeout=600) == 0, "\n".join(survivor.lines)
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()

    study = optuna.load_study(study_name="sweep", storage=storage_url(postgres_url))
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    planned = {Trial({"optim.lr": lr}).key for lr in (1e-3, 2e-3)}
    assert sorted(t.user_attrs[KEY] for t in complete) == sorted(planned)  # all, each once
    stale = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(stale) == 1  # the killed worker's trial, failed by its stale heartbeat ...
    retried = [t for t in complete if t.system_attrs.get("failed_trial") == stale[0].number]
    assert len(retried) == 1 and retried[0].user_attrs[KEY] == stale[0].user_attrs[KEY]
    # ... and retried by the survivor, resuming the killed run from its last checkpoint: the
    # retry's TensorBoard file starts after the checkpoint's step, not at step 0
    assert (killed_run / "metrics.json").is_file() and (killed_run / "metrics_val.json").is_file()
    events = sorted((killed_run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) >= 2
    assert _first_logged_step(events[-1]) >= step - 1 >= 0
    assert (out / "best.json").is_file()
