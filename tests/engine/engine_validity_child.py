"""``rightfocus`` in a child process that kills itself at a chosen phase of a run (test hook).

``RF_TEST_KILL=<phase>`` sends SIGKILL (``sigint:<n>``: SIGINT, like Ctrl-C) to this process:

    step:<n>      inside the training step that follows optimizer step n (mid-batch)
    ckpt:<n>      right after the step-checkpoint hook of optimizer step n
    epochend:<e>  right after the epoch-end checkpoint of epoch e
    val:<e>       inside the second validation batch of epoch e
    test          inside the test evaluation (second batch)
    report        when metrics.json is about to be written (timing.json is written)
    tune          right after the batch-size search (``batch_size: auto``) saved its checkpoint
    sigint:<n>    Ctrl-C inside the training step that follows optimizer step n

``RF_TEST_ORDER_LOG=<file>`` appends one JSON line per training step (``step``, ``epoch``,
a fingerprint of the batch) and per validation epoch (``val``), flushed at once.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import rightfocus.bayes.inference as inference_mod
import rightfocus.engine.module as module_mod
import rightfocus.engine.run as run_mod
from rightfocus.cli import main
from rightfocus.engine.checkpoint import AtomicCheckpointIO, ResumeCheckpoint

# Ctrl-C as in a terminal: a parent started in the background (``cmd &`` in a script) leaves
# SIGINT ignored, and Python then installs no KeyboardInterrupt handler of its own
signal.signal(signal.SIGINT, signal.default_int_handler)

PHASE, _, ARG = os.environ.get("RF_TEST_KILL", "").partition(":")
N = int(ARG) if ARG else -1
LOG = os.environ.get("RF_TEST_ORDER_LOG")
_testing = {"on": False}


def _die(sig: int = signal.SIGKILL) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), sig)


def _log(record: dict[str, Any]) -> None:
    if LOG:
        with open(LOG, "a") as fh:
            fh.write(json.dumps(record) + "\n")


_train_step = module_mod.GuidedModule.training_step


def training_step(self: Any, batch: Any, batch_idx: int) -> Any:
    step = self.trainer.global_step
    if PHASE == "step" and step == N:
        _die()
    if PHASE == "sigint" and step == N:
        _die(signal.SIGINT)
    x, y = batch[0], batch[1]
    _log(
        {
            "step": step,
            "epoch": self.trainer.current_epoch,
            "batch": batch_idx,
            "y": y.tolist(),
            "xsum": round(float(x.double().sum()), 4),
            "rank": self.global_rank,
        }
    )
    return _train_step(self, batch, batch_idx)


module_mod.GuidedModule.training_step = training_step  # type: ignore[method-assign]

_val_step = module_mod.GuidedModule.validation_step


def validation_step(self: Any, batch: Any, batch_idx: int) -> Any:
    if PHASE == "val" and self.current_epoch == N and batch_idx == 1:
        _die()
    if batch_idx == 0:
        _log({"val": self.current_epoch})
    return _val_step(self, batch, batch_idx)


module_mod.GuidedModule.validation_step = validation_step  # type: ignore[method-assign]

_on_batch_end = ResumeCheckpoint.on_train_batch_end


def on_train_batch_end(self: Any, trainer: Any, *args: Any) -> None:
    _on_batch_end(self, trainer, *args)
    if PHASE == "ckpt" and trainer.global_step == N:
        _die()


ResumeCheckpoint.on_train_batch_end = on_train_batch_end  # type: ignore[method-assign]

_on_epoch_end = ResumeCheckpoint.on_train_epoch_end


def on_train_epoch_end(self: Any, trainer: Any, pl_module: Any) -> None:
    _on_epoch_end(self, trainer, pl_module)
    if PHASE == "epochend" and trainer.current_epoch == N:
        _die()


ResumeCheckpoint.on_train_epoch_end = on_train_epoch_end  # type: ignore[method-assign]

_evaluate = run_mod._evaluate


def evaluate(*args: Any, **kwargs: Any) -> Any:
    _testing["on"] = True
    return _evaluate(*args, **kwargs)


run_mod._evaluate = evaluate  # type: ignore[assignment]

_predict = inference_mod.predict_probs
_calls = {"test": 0}


def predict_probs(*args: Any, **kwargs: Any) -> Any:
    if _testing["on"]:
        _calls["test"] += 1
        if PHASE == "test" and _calls["test"] == 2:
            _die()
    return _predict(*args, **kwargs)


inference_mod.predict_probs = predict_probs  # the MC loop of the test evaluation

_write_json = run_mod.atomic_write_json


def atomic_write_json(path: Any, obj: Any) -> Any:
    if PHASE == "report" and Path(path).name == run_mod.METRICS_FILE:
        _die()
    return _write_json(path, obj)


run_mod.atomic_write_json = atomic_write_json  # type: ignore[assignment]

_save = AtomicCheckpointIO.save_checkpoint


def save_checkpoint(self: Any, checkpoint: Any, path: Any, storage_options: Any = None) -> None:
    _save(self, checkpoint, path, storage_options)
    if PHASE == "tune" and Path(path).name.startswith(".scale_batch_size_"):
        _die()


AtomicCheckpointIO.save_checkpoint = save_checkpoint  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
