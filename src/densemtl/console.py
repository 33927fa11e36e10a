"""What a run prints: the third-party notices nobody can act on silenced, one line per epoch for
jobs that run side by side, and the end-of-run summary copied into the job's log file.

Silenced (each names its source; anything else still prints): Lightning's litlogger
advertisement and the ``_pytree`` ``LeafSpec`` deprecation raised inside Lightning itself.
The other notices are avoided at their source: the loggers pass ``batch_size``, the trainer
config leaves ``limit_*_batches`` unset, Lightning's model summary (whose FLOPs column is 0
without an example input) is off in favour of the suite's own parameter and multiply-add
counts, and :class:`densemtl.training.logging.WandbRun` drops the ``anonymous`` argument.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

import pytorch_lightning as pl

#: (logger name, message fragment) of info records that are advertisements
_NOISE_RECORDS = (("pytorch_lightning.utilities.rank_zero", "litlogger"),)
#: warning messages (regular expressions) raised inside third-party code, not by the user's
_NOISE_WARNINGS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",)


def _drop_noise(record: logging.LogRecord) -> bool:
    return not any(record.name == name and text in record.getMessage()
                   for name, text in _NOISE_RECORDS)


def quiet() -> None:
    """Silence the notices listed in the module docstring (idempotent)."""
    for name, _ in _NOISE_RECORDS:
        log = logging.getLogger(name)
        if _drop_noise not in log.filters:
            log.addFilter(_drop_noise)
    for message in _NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def to_log_files(text: str) -> None:
    """Append ``text`` to the files the root logger writes (Hydra's ``<run dir>/<job>.log``),
    not to the console: what was printed there is kept with the run."""
    record = logging.LogRecord("densemtl", logging.INFO, __file__, 0, text, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


class EpochLine(pl.Callback):
    """One line per epoch, prefixed by the job's label, instead of a progress bar: jobs that
    share a console (the parallel launcher) stay readable."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._start = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loss = trainer.callback_metrics.get("train/loss")
        shown = "" if loss is None else f"  train/loss {float(loss):.4g}"
        print(f"[{self.label}] epoch {trainer.current_epoch + 1}/{trainer.max_epochs}{shown}  "
              f"({time.perf_counter() - self._start:.1f} s)", flush=True)


def parallel_job_label(job: dict[str, Any]) -> str | None:
    """``job <n>: <overrides>`` for a job of a multirun launched by the parallel (joblib)
    launcher, whose jobs share one console; None otherwise."""
    if "joblib" not in str(job.get("launcher") or ""):
        return None
    return f"job {job['job_num']}: {' '.join(job.get('overrides', []))}".strip()
