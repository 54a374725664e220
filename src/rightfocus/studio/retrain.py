"""Retrain from the studio: a run derived from the original config, in a child process.

The child is ``python -m rightfocus.cli train <run>/config.yaml --set ...`` -- the same engine
and run folder rules as any run, so a killed server or child resumes by starting the same
retrain again (same feedback and settings -> same run name -> resumed from ``last.ckpt``).
The overrides: ``data.options.feedback_store`` (the store overlay), ``data.feedback_fraction:
1.0`` (keep every stored mask), the chosen guidance and lambda, and a run name
``<run>-studio-<guidance>-<hash of settings and mask versions>``.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rightfocus.engine.checkpoint import LAST, load_checkpoint
from rightfocus.engine.config import load_config

__all__ = ["GUIDANCE_CHOICES", "RetrainJob", "derived_overrides", "start_retrain"]

GUIDANCE_CHOICES = ("rrr", "bayes_feedback", "counterexamples")


def derived_overrides(
    session: Any, guidance: str, lam: float | None, epochs: int | None
) -> tuple[str, list[str]]:
    """The derived run's name and ``--set`` overrides (validated by loading the config)."""
    if guidance not in GUIDANCE_CHOICES:
        raise ValueError(f"guidance must be one of {', '.join(GUIDANCE_CHOICES)}, got {guidance!r}")
    if guidance == "bayes_feedback" and not session.bayesian:
        raise ValueError("bayes_feedback needs a Bayesian model; choose rrr or counterexamples")
    if lam is not None and not (math.isfinite(lam) and lam >= 0):
        raise ValueError(f"lambda must be a finite number >= 0, got {lam}")
    if epochs is not None and not 1 <= int(epochs) <= 10_000:
        raise ValueError(f"epochs must be in [1, 10000], got {epochs}")
    annotated = session.store.indices()
    if not annotated:
        raise ValueError("Save at least one mask before retraining: the store is empty")
    spec: dict[str, Any] = {"name": guidance, "empty_masks": "ignore"}
    if guidance != "counterexamples":
        spec["lam"] = float(lam if lam is not None else (1.0 if guidance == "rrr" else 3e-4))
    state = [(i, session.store.version(i)) for i in annotated]
    digest = hashlib.sha256(
        json.dumps([spec, epochs, state, session.checkpoint_sha256]).encode()
    ).hexdigest()[:10]
    name = f"{session.config.run}-studio-{guidance}-{digest}"
    cfg = session.config
    n_train = len(session.train_indices)
    bs = cfg.data.batch_size if isinstance(cfg.data.batch_size, int) else 32
    steps = max(1, math.ceil(n_train / bs))
    sets = [
        f"runs_dir={session.run_dir.parent.parent}",
        f"run={name}",
        f"data.options.feedback_store={session.store.root.resolve()}",
        "data.feedback_fraction=1.0",
        "guidance=" + json.dumps([spec]),
        "trainer.progress_bar=false",
        f"trainer.checkpoint_every_n_steps={max(1, steps // 4)}",
    ]
    if epochs is not None:
        sets.append(f"optim.epochs={int(epochs)}")
    load_config(session.run_dir / "config.yaml", sets)  # fail here, not in the child
    return name, sets


@dataclass
class RetrainJob:
    """One background retrain; ``status()`` reads progress from the run folder."""

    name: str
    run_dir: Path
    total_steps: int
    log_file: Path
    settings: dict[str, Any]
    proc: subprocess.Popen[bytes] | None = None
    started: float = field(default_factory=time.time)
    _step: int = 0
    _mtime: float = 0.0

    def _progress(self) -> int:
        last = self.run_dir / "checkpoints" / LAST
        try:
            mtime = last.stat().st_mtime
        except FileNotFoundError:
            return self._step
        if mtime != self._mtime:
            try:
                self._step = int(load_checkpoint(last).get("global_step", self._step))
                self._mtime = mtime
            except Exception:  # being replaced right now: keep the last reading
                pass
        return self._step

    def status(self) -> dict[str, Any]:
        done = (self.run_dir / "metrics.json").is_file()
        code = None if self.proc is None else self.proc.poll()
        if done:
            state, frac = "done", 1.0
        elif code is not None:
            state, frac = ("failed" if code != 0 else "done"), 0.0
        else:
            step = self._progress()
            frac = min(0.99, step / max(1, self.total_steps))
            state = "testing" if step >= self.total_steps else "training"
        out: dict[str, Any] = {
            "job": self.name,
            "state": state,
            "progress": round(frac, 3),
            "seconds": round(time.time() - self.started, 1),
            "settings": self.settings,
        }
        if state == "failed":
            tail = (
                self.log_file.read_text(errors="replace")[-2000:] if self.log_file.is_file() else ""
            )
            out["message"] = f"The retrain stopped with exit code {code}. Last output:\n{tail}"
        return out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start_retrain(
    session: Any, guidance: str, lam: float | None = None, epochs: int | None = None
) -> RetrainJob:
    """Start (or resume, or just report) the derived run in a child process."""
    name, sets = derived_overrides(session, guidance, lam, epochs)
    existing = session.jobs.get(name)
    if existing is not None and existing.status()["state"] in ("training", "testing", "done"):
        return existing
    run_dir = session.run_dir.parent / name
    cfg = session.config
    bs = cfg.data.batch_size if isinstance(cfg.data.batch_size, int) else 32
    total = max(1, math.ceil(len(session.train_indices) / bs)) * int(epochs or cfg.optim.epochs)
    log_file = session.store.root / "retrain" / f"{name}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    settings = {"guidance": guidance, "lam": lam, "epochs": epochs or cfg.optim.epochs}
    job = RetrainJob(name, run_dir, total, log_file, settings)
    if not (run_dir / "metrics.json").is_file():
        cmd = [
            sys.executable,
            "-m",
            "rightfocus.cli",
            "train",
            str(session.run_dir / "config.yaml"),
        ]
        for s in sets:
            cmd += ["--set", s]
        cmd.append("--quiet")
        with open(log_file, "ab") as fh:
            job.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
    session.jobs[name] = job
    return job
