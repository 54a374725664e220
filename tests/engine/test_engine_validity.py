"""Experiment validity and run-folder safety (fast, in-process or with tiny child processes).

Per-epoch reshuffling, clean checkpoint errors (fuzzed), one writer per run folder, temporary
files and the umask, failed starts that do not pin their config, bf16 on CPU, the batch-size
search's leftovers, torch flags after a run, Ctrl-C.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from rightfocus._io import (
    LockHeldError,
    atomic_path,
    atomic_write_text,
    exclusive_lock,
    remove_stale_temp_files,
)
from rightfocus.engine.checkpoint import (
    AtomicCheckpointIO,
    CheckpointError,
    ResumeCheckpoint,
    check_resume_checkpoint,
    load_checkpoint,
)
from rightfocus.engine.config import load_config_dict
from rightfocus.engine.datamodule import EpochBatchSampler, ResumableDataLoader
from rightfocus.engine.run import (
    RunConflictError,
    RunInterrupted,
    RunLockedError,
    prepare_run_dir,
    run_experiment,
)

CHILD = Path(__file__).with_name("engine_cli_child.py")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _config(tmp_path: Path, run: str = "r", **sections: dict) -> dict:
    raw = {
        "runs_dir": str(tmp_path / "runs"),
        "experiment": "validity",
        "run": run,
        "data": {
            "dataset": "decoy_mnist",
            "variant": "color",
            "max_train": 90,
            "max_test": 30,
            "batch_size": 30,
            "folds": 3,
        },
        "model": {"name": "lenet"},
        "optim": {"epochs": 1, "lr": 3e-3},
        "trainer": {"checkpoint_every_n_steps": 1, "log_every_n_steps": 1, "progress_bar": False},
        "evaluation": {"metrics": ["accuracy", "nll"]},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return raw


class _Payload:
    """Unpickling this would create a file (it must never run)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (Path(self.marker),))


_save_step_checkpoint = ResumeCheckpoint.on_train_batch_end


def _stop_after_first_checkpoint(self, trainer, *args):  # type: ignore[no-untyped-def]
    """A crash right after the step checkpoint of step 1 (then the run resumes from it)."""
    _save_step_checkpoint(self, trainer, *args)
    if trainer.global_step == 1:
        assert load_checkpoint(self.path)["global_step"] == 1
        raise RuntimeError("killed")


# --- per-epoch reshuffling ------------------------------------------------------------------


def test_loader_takes_each_epoch_from_the_trainer_and_skips_only_the_saved_epoch() -> None:
    data = torch.utils.data.TensorDataset(torch.arange(20))
    epoch = {"e": 0}
    sampler = EpochBatchSampler(20, 6, seed=3)
    loader = ResumableDataLoader(data, sampler, lambda: 0, lambda: epoch["e"])
    orders = []
    for e in range(3):
        epoch["e"] = e
        orders.append([b[0].tolist() for b in loader])
        assert orders[-1] == [sampler.order(e)[i : i + 6] for i in range(0, 20, 6)]
    assert orders[0] != orders[1] != orders[2] != orders[0]
    # a state saved after 2 batches of epoch 1 skips them in epoch 1 only (mid-epoch resume) ...
    loader.load_state_dict({"epoch": 1, "batches_done": 2})
    epoch["e"] = 1
    assert [b[0].tolist() for b in loader] == orders[1][2:]
    # ... and a state saved at the end of epoch 1 does not eat into epoch 2
    loader.load_state_dict({"epoch": 1, "batches_done": 4})
    epoch["e"] = 2
    assert [b[0].tolist() for b in loader] == orders[2]


def test_ddp_ranks_take_shards_of_each_epochs_permutation() -> None:
    for epoch in (0, 1):
        one = EpochBatchSampler(20, 8, seed=1)
        one.set_epoch(epoch)
        ranks = []
        for r in (0, 1):
            s = EpochBatchSampler(20, 8, seed=1, rank=r, world_size=2)
            s.set_epoch(epoch)
            ranks.append(list(s))
        merged = [sorted(a + b) for a, b in zip(*ranks, strict=True)]
        assert merged == [sorted(b) for b in one]
        assert not {i for b in ranks[0] for i in b} & {i for b in ranks[1] for i in b}


def test_training_reshuffles_every_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rightfocus.engine.module import GuidedModule

    seen: list[tuple[int, list[int]]] = []
    step = GuidedModule.training_step

    def recording(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        seen.append((self.current_epoch, batch[1].tolist()))
        return step(self, batch, batch_idx)

    monkeypatch.setattr(GuidedModule, "training_step", recording)
    cfg = load_config_dict(_config(tmp_path, optim={"epochs": 3}, data={"folds": 1}))
    run_experiment(cfg, quiet=True)
    by_epoch = [[y for e, y in seen if e == epoch] for epoch in range(3)]
    assert all(len(b) == 3 for b in by_epoch)  # 90 images / 30
    assert by_epoch[0] != by_epoch[1] != by_epoch[2] != by_epoch[0]
    last = load_checkpoint(cfg.run_dir / "checkpoints" / "last.ckpt")
    assert last["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["epoch"] == 2


# --- checkpoints: clean errors ----------------------------------------------------------------


def test_random_bytes_and_truncations_always_give_checkpoint_error(tmp_path: Path) -> None:
    good = tmp_path / "good.ckpt"
    AtomicCheckpointIO().save_checkpoint(
        {"state_dict": {"w": torch.arange(6.0)}, "loops": {"a": [1, 2]}, "epoch": 1}, good
    )
    data = good.read_bytes()
    rng = random.Random(0)
    bad = tmp_path / "bad.ckpt"
    cases = [rng.randbytes(rng.randint(0, 3000)) for _ in range(150)]
    cases += [b"\x80\x02" + rng.randbytes(rng.randint(0, 300)) for _ in range(150)]  # pickle-ish
    cases += [b"PK\x03\x04" + rng.randbytes(rng.randint(0, 300)) for _ in range(50)]  # zip-ish
    cases += [data[: rng.randrange(len(data))] for _ in range(150)]
    for case in cases:
        bad.write_bytes(case)
        with pytest.raises(CheckpointError, match=r"truncated or corrupt|not a checkpoint") as err:
            load_checkpoint(bad)
        assert "weights_only" not in str(err.value)


def test_checkpoint_from_another_model_is_named(tmp_path: Path) -> None:
    from rightfocus.models import LeNet

    path = tmp_path / "last.ckpt"
    other = {f"model.{k}": v for k, v in LeNet(num_classes=3).state_dict().items()}
    keys = dict.fromkeys(("optimizer_states", "loops", "callbacks", "epoch", "global_step"), 0)
    AtomicCheckpointIO().save_checkpoint({"state_dict": other, **keys}, path)
    mine = {f"model.{k}": v for k, v in LeNet(num_classes=10).state_dict().items()}
    with pytest.raises(CheckpointError, match=r"written by another model \(shape: model\."):
        check_resume_checkpoint(path, mine)
    AtomicCheckpointIO().save_checkpoint({"state_dict": other}, path)
    with pytest.raises(CheckpointError, match="not a complete training checkpoint"):
        check_resume_checkpoint(path, mine)


def test_resume_from_another_models_checkpoint_is_refused(tmp_path: Path) -> None:
    cfg = load_config_dict(_config(tmp_path))
    run_experiment(cfg, quiet=True)
    last = cfg.run_dir / "checkpoints" / "last.ckpt"
    (cfg.run_dir / "metrics.json").unlink()
    state = load_checkpoint(last)
    state["state_dict"] = {"model.other.weight": torch.zeros(2)}
    AtomicCheckpointIO().save_checkpoint(state, last)
    with pytest.raises(CheckpointError, match=r"another model.*missing: model"):
        run_experiment(cfg, quiet=True)


# --- files: umask, temporary files, one writer ------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_honour_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        path = atomic_write_text(tmp_path / "a.txt", "x")
        ckpt = tmp_path / "c.ckpt"
        AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(1)}, ckpt)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert ckpt.stat().st_mode & 0o777 == 0o666 & ~umask


def test_cleanup_keeps_temp_files_of_live_writers(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    dead_pid = int(dead.stdout)  # that process has exited
    with atomic_path(tmp_path / "mine.json") as in_flight:  # this (live) process is writing
        stale = tmp_path / "sub" / f".last.ckpt.{dead_pid}.ab12cd34.tmp"
        stale.parent.mkdir()
        stale.write_bytes(b"partial")
        legacy = tmp_path / ".old.json.k2j3h4.tmp"  # a name without a PID: stale
        legacy.write_text("{")
        assert sorted(remove_stale_temp_files(tmp_path)) == sorted([stale, legacy])
        assert in_flight.exists()
        in_flight.write_text("{}")
    assert (tmp_path / "mine.json").read_text() == "{}"


def _hold_lock(path: Path) -> subprocess.Popen[str]:
    import rightfocus._io

    code = textwrap.dedent(  # loads _io.py alone: importing the package would take seconds
        f"""
        import importlib.util, time
        spec = importlib.util.spec_from_file_location("io_", {rightfocus._io.__file__!r})
        io_ = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(io_)
        with io_.exclusive_lock({str(path)!r}):
            print("locked", flush=True)
            time.sleep(120)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_is_exclusive_names_the_holder_and_dies_with_it(tmp_path: Path) -> None:
    lock = tmp_path / "run" / ".lock"
    holder = _hold_lock(lock)
    try:
        with pytest.raises(LockHeldError) as err, exclusive_lock(lock):
            pass
        assert err.value.pid == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with exclusive_lock(lock):  # the killed holder's lock file does not block
        assert lock.read_text().strip() == str(os.getpid())
        with pytest.raises(LockHeldError), exclusive_lock(lock):  # nor is it re-entrant
            pass


@pytest.mark.slow  # starts the command line in a child process (seconds of imports)
def test_second_train_on_a_run_folder_exits_naming_the_holder(tmp_path: Path) -> None:
    cfg = load_config_dict(_config(tmp_path))
    holder = _hold_lock(cfg.run_dir / ".lock")
    try:
        with pytest.raises(RunLockedError, match=f"in use by process {holder.pid}"):
            run_experiment(cfg, quiet=True)
        config = tmp_path / "c.yaml"
        config.write_text(json.dumps(_config(tmp_path)))
        proc = subprocess.run(
            [sys.executable, str(CHILD), "train", str(config), "--quiet"],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"in use by process {holder.pid}" in lines[0], proc.stderr
    assert sorted(p.name for p in cfg.run_dir.iterdir()) == [".lock"]  # nothing else written


# --- failed starts, bf16, batch-size search, torch flags, Ctrl-C --------------------------------


def test_a_run_that_never_trained_does_not_pin_its_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rightfocus.engine.run as run_mod

    def broken(config):  # type: ignore[no-untyped-def]
        raise ValueError("set-up failed")

    cfg = load_config_dict(_config(tmp_path))
    with monkeypatch.context() as m:
        m.setattr(run_mod, "build_model", broken)
        with pytest.raises(ValueError, match="set-up failed"):
            run_experiment(load_config_dict(_config(tmp_path), ["optim.lr=0.5"]), quiet=True)
    assert "lr: 0.5" in (cfg.run_dir / "config.yaml").read_text()  # written, nothing trained
    with pytest.warns(UserWarning, match="never trained"):
        metrics = run_experiment(cfg, quiet=True)  # the corrected command works
    assert set(metrics) >= {"accuracy", "nll"}
    assert "lr: 0.003" in (cfg.run_dir / "config.yaml").read_text()
    with pytest.raises(RunConflictError, match=r"rm -r .*validity/r"):  # now it is pinned
        prepare_run_dir(load_config_dict(_config(tmp_path), ["optim.lr=0.5"]))


def test_bf16_mixed_trains_validates_and_resumes_on_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config_dict(
        _config(
            tmp_path,
            data={"batch_size": 20},
            trainer={"precision": "bf16-mixed", "accelerator": "cpu", "deterministic": True},
            model={"bayesian": True},  # MC mean of bf16 softmaxes missed summing to 1 by 1e-3
            evaluation={"val_mc_samples": 3, "mc_samples": 3},
        )
    )
    before = torch.are_deterministic_algorithms_enabled()

    with monkeypatch.context() as m:
        m.setattr(ResumeCheckpoint, "on_train_batch_end", _stop_after_first_checkpoint)
        with pytest.raises(RuntimeError, match="killed"):
            run_experiment(cfg, quiet=True)
    assert torch.are_deterministic_algorithms_enabled() == before  # not left set by the run
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ or before
    metrics = run_experiment(cfg, quiet=True)  # resumes after the first step's checkpoint
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["nll"] == metrics["nll"]
    steps = json.loads((cfg.run_dir / "timing.json").read_text())["train_steps"]
    assert steps == 3  # 60 images / 20, each step counted once
    assert (cfg.run_dir / "checkpoints" / "best.ckpt").is_file()  # validation ran in bf16
    assert torch.are_deterministic_algorithms_enabled() == before


def test_ctrl_c_says_the_same_command_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rightfocus.engine.module import GuidedModule

    def interrupt(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    cfg = load_config_dict(_config(tmp_path))
    monkeypatch.setattr(GuidedModule, "training_step", interrupt)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(RunInterrupted, match="Run the same command again to resume"):
        run_experiment(cfg, quiet=True)
    restored = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, handler)
    assert restored == handler  # Lightning had left Ctrl-C ignored
    assert not (cfg.run_dir / "metrics.json").exists()


def test_seeded_counterexample_noise_continues_after_a_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    guidance = {"guidance": [{"name": "counterexamples", "seed": 7}]}

    def config(run: str):  # type: ignore[no-untyped-def]
        raw = _config(tmp_path, run, data={"batch_size": 15, "folds": 1, "max_train": 45})
        return load_config_dict(raw | guidance)

    run_experiment(config("full"), quiet=True)
    with monkeypatch.context() as m:
        m.setattr(ResumeCheckpoint, "on_train_batch_end", _stop_after_first_checkpoint)
        with pytest.raises(RuntimeError, match="killed"):
            run_experiment(config("resumed"), quiet=True)
    run_experiment(config("resumed"), quiet=True)
    weights = [
        load_checkpoint(tmp_path / "runs" / "validity" / r / "checkpoints" / "last.ckpt")
        for r in ("full", "resumed")
    ]
    assert weights[0]["global_step"] == weights[1]["global_step"] == 3
    for k, v in weights[0]["state_dict"].items():
        assert torch.equal(v, weights[1]["state_dict"][k]), k


def test_a_misspelled_variant_then_the_corrected_command(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="colour"):
        run_experiment(load_config_dict(_config(tmp_path), ["data.variant=colour"]), quiet=True)
    with pytest.warns(UserWarning, match="never trained"):
        metrics = run_experiment(load_config_dict(_config(tmp_path)), quiet=True)
    assert set(metrics) >= {"accuracy", "nll"}


def test_evaluate_refuses_a_run_that_is_being_trained(tmp_path: Path) -> None:
    from rightfocus.engine.run import evaluate_run

    cfg = load_config_dict(_config(tmp_path))
    metrics = run_experiment(cfg, quiet=True)
    holder = _hold_lock(cfg.run_dir / ".lock")
    try:
        with pytest.raises(RunLockedError, match=f"process {holder.pid}"):
            evaluate_run(cfg.run_dir, "test")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert evaluate_run(cfg.run_dir, "test") == pytest.approx(metrics)


@pytest.mark.slow  # two command-line processes
def test_a_run_killed_during_the_batch_size_search_leaves_no_search_files(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps(_config(tmp_path, data={"batch_size": "auto", "folds": 1})))
    child = Path(__file__).with_name("engine_validity_child.py")
    cmd = [sys.executable, str(child), "train", str(config), "--quiet"]
    run_dir = tmp_path / "runs" / "validity" / "r"
    killed = subprocess.run(
        cmd, env={**os.environ, "RF_TEST_KILL": "tune"}, capture_output=True, timeout=300
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(list(run_dir.glob(".scale_batch_size_*.ckpt"))) == 1  # what a kill leaves
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not list(run_dir.glob(".scale_batch_size_*")) and not list(run_dir.rglob(".*.tmp"))
    assert (run_dir / "metrics.json").is_file() and (run_dir / "batch_size.json").is_file()


@pytest.mark.slow  # the console script in a child process
def test_console_script_refuses_a_checkpoint_with_pickled_code(tmp_path: Path) -> None:
    cfg = load_config_dict(_config(tmp_path))
    prepare_run_dir(cfg)
    last = cfg.run_dir / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {}, "x": _Payload(str(marker))}, last)
    before = {p: p.read_bytes() for p in cfg.run_dir.rglob("*") if p.is_file()}
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps(_config(tmp_path)))
    script = Path(sys.executable).with_name("rightfocus")
    proc = subprocess.run(
        [str(script), "train", str(config), "--quiet"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "contains pickled code, refused for safety" in lines[0], lines
    assert "weights_only=False" not in proc.stderr and not marker.exists()
    after = {p: p.read_bytes() for p in cfg.run_dir.rglob("*") if p.is_file()}
    assert {p: b for p, b in after.items() if p.name != ".lock"} == before
