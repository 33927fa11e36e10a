"""Training callbacks: the run's checkpoint (epoch ends, every N batches / M minutes, preemption
signals), learning rates, Δm and qualitative prediction grids.

:class:`RunCheckpoint` is what makes a run survive: ``<run dir>/checkpoints/last.ckpt`` is at
most one epoch (or ``checkpoint.every_n_steps`` batches, or ``checkpoint.every_n_minutes``) old;
with the random-number states and the training sampler's position in it, a resumed run continues
bit-identically on the CPU. A SIGTERM (and, under SLURM, SIGUSR1/SIGUSR2) ends training after the
current batch with a checkpoint, marks the run ``interrupted`` in ``run_info.json`` and raises
:class:`RunInterrupted` (the CLI exits with 128 + the signal number, after asking SLURM to requeue
the job when the signal was SLURM's).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.trainer.states import TrainerFn

from densemtl.runs import delta_m_of
from densemtl.training.checkpoint import LAST, checkpoint_dir, remove_orphans, temporary_path
from densemtl.training.logging import HistoryLogger, mark_run

#: signals that SLURM sends ahead of a time limit or preemption (``--signal=USR1@<seconds>``;
#: submitit uses USR2)
SLURM_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


def under_slurm() -> bool:
    """True inside a SLURM batch job (not an interactive ``srun bash``)."""
    return "SLURM_JOB_ID" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash",
                                                                                      "interactive")


def slurm_job_id() -> str:
    """This SLURM job's id as ``scontrol`` names it (``<array job>_<task>`` in a job array); a
    requeued job keeps it."""
    if "SLURM_ARRAY_JOB_ID" in os.environ:
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ["SLURM_JOB_ID"]


def rng_states() -> dict[str, Any]:
    """The global random states (python, numpy, torch CPU and CUDA) as checkpointable values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_states` returned."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RunInterrupted(Exception):
    """Training stopped on a signal after writing the checkpoint; ``exit_code`` = 128 + signal."""

    def __init__(self, signum: int, checkpoint: Path, requeued: bool) -> None:
        name = signal.Signals(signum).name
        super().__init__(f"{name} received: checkpoint written to {checkpoint}"
                         + ("; SLURM job requeued" if requeued else ""))
        self.signum, self.checkpoint, self.requeued = signum, checkpoint, requeued
        self.exit_code = 128 + signum


def requeue_slurm_job(signum: int, previous: Any) -> bool:
    """Ask SLURM to requeue this job: through submitit's own handler when the job runs under
    submitit (it re-submits the same job, which resumes from the run directory), else with
    ``scontrol requeue``. Returns whether it was asked."""
    if callable(previous):
        previous(signum, None)  # submitit: requeues and exits
        return True
    try:
        return subprocess.run(["scontrol", "requeue", slurm_job_id()],
                              check=False).returncode == 0
    except FileNotFoundError:
        return False


class RunCheckpoint(pl.callbacks.Checkpoint):
    """Keeps ``<run dir>/checkpoints/last.ckpt`` current and turns preemption signals into a
    checkpoint plus a clean stop (see the module docstring).

    Written after every training epoch (it is a ``Checkpoint``, so Lightning calls its
    ``on_train_epoch_end`` after the module's, i.e. after validation and the weighting's epoch
    update), every ``every_n_steps`` training batches and every ``every_n_minutes`` within an
    epoch (never at an epoch's last batch: the epoch-end checkpoint follows). Its state holds the
    global random states, restored when training restarts. Temporary files of writes killed
    half-way are removed at start. ``stop_after_epochs`` ends the fit once the run has trained
    that many epochs, keeping everything else (the schedule's horizon) of ``max_epochs``: the
    way to train part of a run now and resume it later.
    """

    def __init__(
        self,
        run_dir: str | Path,
        every_n_steps: int | None = None,
        every_n_minutes: float | None = None,
        signals: Sequence[int] = (signal.SIGTERM,),
        stop_after_epochs: int | None = None,
    ) -> None:
        for key, value in (("every_n_steps", every_n_steps), ("every_n_minutes", every_n_minutes),
                           ("stop_after_epochs", stop_after_epochs)):
            if value is not None and not value > 0:
                raise ValueError(f"checkpoint.{key} must be positive or null, got {value!r}")
        self.run_dir = Path(run_dir)
        self.path = checkpoint_dir(run_dir) / LAST
        self.every_n_steps = every_n_steps
        self.every_n_seconds = None if every_n_minutes is None else 60.0 * every_n_minutes
        self.signals = tuple(signals)
        self.stop_after_epochs = stop_after_epochs
        #: whether ``stop_after_epochs`` ended the fit
        self.stopped_early = False
        self._received: int | None = None
        self._stopping = False
        self._trainer: pl.Trainer | None = None
        self._owner = os.getpid()
        self._previous: dict[int, Any] = {}
        self._last_save = time.monotonic()
        self._rng: dict[str, Any] | None = None
        self._history_step = -1

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == TrainerFn.FITTING:
            remove_orphans(self.path.parent)
            self._last_save = time.monotonic()
            self._trainer = trainer

    # -- signals ------------------------------------------------------------------------------
    @contextmanager
    def signals_caught(self) -> Iterator[None]:
        """Within: the signals only note themselves; training stops at the next batch end.

        Installed around ``trainer.fit`` rather than in a hook: Lightning composes its own
        SIGTERM handler with it and restores it afterwards, even when ``fit`` raises.
        """
        self._owner = os.getpid()
        self._previous = {s: signal.signal(s, self._receive) for s in self.signals}
        try:
            yield
        finally:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def _receive(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._owner:
            # a process forked inside fit (a data worker pool) inherited the handler: it must
            # still die of the signal, or terminating the pool hangs
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self._received = signum
        if self._trainer is not None:
            # Lightning's own SIGTERM handling (composed with this handler, which runs after it)
            # would end fit at once with SystemExit(0) and no checkpoint: this callback decides
            self._trainer._signal_connector.received_sigterm = False

    def _signal_received(self, trainer: pl.Trainer) -> bool:
        # every process must stop at the same batch (saving is collective)
        return trainer.strategy.reduce_boolean_decision(self._received is not None, all=False)

    def _stop(self, trainer: pl.Trainer) -> None:
        for logger in trainer.loggers:
            logger.save()
        signum = self._received if self._received is not None else signal.SIGTERM
        info = {"signal": signal.Signals(signum).name, "checkpoint": str(self.path),
                "epoch": trainer.current_epoch, "global_step": trainer.global_step}
        mark_run(self.run_dir, "interrupted", **info)
        requeued = False
        if signum in SLURM_SIGNALS and under_slurm() and trainer.is_global_zero:
            requeued = requeue_slurm_job(signum, self._previous.get(signum))
        raise RunInterrupted(signum, self.path, requeued)

    # -- saving -------------------------------------------------------------------------------
    def save(self, trainer: pl.Trainer, epoch_end: bool = False) -> None:
        """Write ``last.ckpt`` now (all processes call it), the loggers' history first."""
        for logger in trainer.loggers:
            logger.save()
        # the last logging step the checkpoint covers: within an epoch, the current batch's
        # row is still to be logged (at this step); at an epoch's end, the epoch's last batch
        # and its epoch rows were logged at the step before
        step = trainer.fit_loop.epoch_loop._batches_that_stepped
        self._history_step = step - 1 if epoch_end else step
        trainer.save_checkpoint(self.path, weights_only=False)  # everything, not only weights
        self._last_save = time.monotonic()

    def _due(self, trainer: pl.Trainer) -> bool:
        batches = trainer.fit_loop.epoch_loop.total_batch_idx + 1
        by_steps = self.every_n_steps is not None and batches % self.every_n_steps == 0
        by_time = (self.every_n_seconds is not None
                   and time.monotonic() - self._last_save >= self.every_n_seconds)
        return by_steps or trainer.strategy.broadcast(by_time)  # rank 0's clock decides

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # on_train_epoch_end saves (and stops, if a signal came)
        self._stopping = self._signal_received(trainer)
        if self._stopping or self._due(trainer):
            self.save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save(trainer, epoch_end=True)
        self._stopping = self._signal_received(trainer)
        done = trainer.current_epoch + 1
        if self.stop_after_epochs is not None and done >= self.stop_after_epochs:
            trainer.should_stop = self.stopped_early = done < trainer.max_epochs

    # the stop itself waits for the next batch or epoch, so that Lightning first logs the
    # checkpointed batch's (or epoch's) metrics, which the resumed run will not repeat
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        if self._stopping:
            self._stop(trainer)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._stopping:
            self._stop(trainer)

    # -- random states ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_states(), "history_step": self._history_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._rng = state_dict["rng"]
        self._history_step = state_dict["history_step"]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # restored here, not at load time: building the model and the loaders in between must
        # not shift the streams
        if self._rng is not None:
            set_rng_states(self._rng)
            self._rng = None
            # the history continues from the checkpoint: drop rows an interrupted process
            # logged after it (the resumed run logs them again)
            for logger in trainer.loggers:
                if isinstance(logger, HistoryLogger):
                    logger.experiment.drop_after(self._history_step)


def run_checkpoint(trainer: pl.Trainer) -> RunCheckpoint:
    """The trainer's :class:`RunCheckpoint`."""
    return next(cb for cb in trainer.callbacks if isinstance(cb, RunCheckpoint))


class LoopTimer(pl.Callback):
    """Wall time of the training loop itself (``seconds``: from its start to its end, validation
    epochs inside it included) and the moment it started (``started``, ``time.perf_counter``),
    so set-up — data rendering, model building, the first job's imports — is counted apart."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.seconds: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds = time.perf_counter() - self.started


def build_callbacks(
    cfg: Mapping[str, Any], output_dir: str | Path, baselines: Mapping | None
) -> list[pl.Callback]:
    """The run's checkpoint (``cfg.checkpoint``), the learning-rate monitor, Δm at every
    validation (with ``baselines``) and the qualitative grids (``cfg.tracking.qualitative``
    images, 0 = off)."""
    ckpt = cfg["checkpoint"]
    signals = (signal.SIGTERM, *SLURM_SIGNALS) if under_slurm() else (signal.SIGTERM,)
    callbacks: list[pl.Callback] = [
        RunCheckpoint(output_dir, ckpt["every_n_steps"], ckpt["every_n_minutes"], signals,
                      ckpt["stop_after_epochs"]),
        LearningRates(),
    ]
    if baselines is not None:
        callbacks.append(DeltaMMonitor(baselines))
    n_images = int(cfg["tracking"]["qualitative"])
    if n_images > 0:
        from densemtl.data.transforms import IMAGENET_MEAN, IMAGENET_STD

        augment = dict(cfg["data"].get("augment") or {})
        mean, std = augment.get("mean") or IMAGENET_MEAN, augment.get("std") or IMAGENET_STD
        callbacks.append(
            QualitativeGrid(Path(output_dir) / "qualitative", n_images, tuple(mean), tuple(std))
        )
    return callbacks


def log_scalars(trainer: pl.Trainer, values: Mapping[str, float]) -> None:
    """Send ``values`` (and the epoch, as ``self.log`` does) to every logger at the step Lightning
    logs at, for hooks where ``self.log`` is not allowed (``on_validation_end``)."""
    step = trainer.fit_loop.epoch_loop._batches_that_stepped
    for logger in trainer.loggers:
        logger.log_metrics({**values, "epoch": trainer.current_epoch}, step=step)


class LearningRates(pl.Callback):
    """Logs every parameter group's learning rate: ``step/lr/<group name>`` per step (every
    ``trainer.log_every_n_steps``) and its epoch mean ``train/lr/<group name>``.

    Not Lightning's ``LearningRateMonitor``: it writes CSV rows without an ``epoch``, which the
    curve readers need, and names groups after the optimiser class rather than the group.
    """

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        many = len(trainer.optimizers) > 1
        for k, optimizer in enumerate(trainer.optimizers):
            for i, group in enumerate(optimizer.param_groups):
                name = f"{f'opt{k}/' if many else ''}{group.get('name', f'group{i}')}"
                for key, step in ((f"step/lr/{name}", True), (f"train/lr/{name}", False)):
                    pl_module.log(key, float(group["lr"]), on_step=step, on_epoch=not step,
                                  batch_size=1)


class DeltaMMonitor(pl.Callback):
    """Logs ``val/delta_m_gain`` and ``val/delta_m_drop`` after every validation.

    Runs in ``on_validation_end`` because callbacks' ``on_validation_epoch_end`` runs *before* the
    module's, which is where the epoch's metrics (``module.val_results``) are computed.
    """

    def __init__(self, baselines: Mapping[str, Mapping[str, float]]) -> None:
        self.baselines = {t: dict(m) for t, m in baselines.items()}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Fail before training if a task or primary metric lacks a (non-zero) baseline."""
        delta_m_of(self.baselines, self.baselines, pl_module.tasks)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not pl_module.val_results:
            return
        d = delta_m_of(pl_module.val_results, self.baselines, pl_module.tasks)
        log_scalars(trainer, {f"val/{k}": v for k, v in d.items()})


def tile(rows: Sequence[Sequence[np.ndarray]], gap: int = 2, zoom: int = 1) -> np.ndarray:
    """Equal-size ``H×W×3`` pictures laid out as a grid with white ``gap``-pixel separators,
    each enlarged ``zoom`` times (pixel repetition: labels stay exact)."""
    rows = [[p.repeat(zoom, axis=0).repeat(zoom, axis=1) for p in r] for r in rows]
    h, w = rows[0][0].shape[:2]
    n_cols = max(len(r) for r in rows)
    grid = np.full((len(rows) * (h + gap) - gap, n_cols * (w + gap) - gap, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, picture in enumerate(row):
            if picture.shape[:2] != (h, w):
                raise ValueError(f"grid tile ({i}, {j}) is {picture.shape[:2]}, expected {(h, w)}")
            grid[i * (h + gap): i * (h + gap) + h, j * (w + gap): j * (w + gap) + w] = picture
    return grid


def prediction_grids(
    module: pl.LightningModule,
    batch: Mapping[str, Any],
    mean: Sequence[float],
    std: Sequence[float],
    min_side: int = 192,
) -> dict[str, np.ndarray]:
    """Per task a ``uint8`` grid: one row per image, columns image | ground truth | prediction,
    drawn with the task's own colour map (the panels of ``analysis.qualitative``), each panel
    enlarged by an integer factor to at least ``min_side`` pixels (64-pixel scenes are too small
    to judge by eye)."""
    from densemtl.analysis.qualitative import ValidationBatch, qualitative_panels

    data = ValidationBatch(dict(batch), tuple(mean), tuple(std))
    n = batch["image"].shape[0]
    rows = qualitative_panels({"prediction": module}, data, indices=range(n))
    pairs = list(zip(rows[::2], rows[1::2]))  # (ground-truth row, prediction row) per image
    zoom = max(1, -(-min_side // min(batch["image"].shape[-2:])))
    return {
        t: tile([[truth.panels["image"], truth.panels[t], pred.panels[t]] for truth, pred in pairs],
                zoom=zoom)
        for t in module.tasks
    }


class QualitativeGrid(pl.Callback):
    """After every validation, the first ``n_images`` validation images with each task's ground
    truth and prediction: PNGs in ``out_dir/<task>/epoch_<NNNN>.png`` (``final.png`` for a
    validation outside ``fit``) and, when wandb or TensorBoard is a logger, images under
    ``val/qualitative/<task>``. Only the global-zero process draws."""

    def __init__(
        self,
        out_dir: str | Path,
        n_images: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.out_dir = Path(out_dir)
        self.n_images = int(n_images)
        self.mean, self.std = tuple(mean), tuple(std)
        self._batch: dict[str, Any] | None = None

    def _fixed_batch(self, trainer: pl.Trainer) -> dict[str, Any]:
        """The same first validation images every epoch (on the CPU; the prediction moves them)."""
        if self._batch is None:
            loader = trainer.val_dataloaders
            loader = loader[0] if isinstance(loader, Sequence) else loader
            batch = next(iter(loader))
            self._batch = {
                k: v[: self.n_images] for k, v in batch.items() if isinstance(v, torch.Tensor)
            }
        return self._batch

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        from matplotlib.image import imsave

        batch = self._fixed_batch(trainer)
        grids = prediction_grids(pl_module, batch, self.mean, self.std)
        step = trainer.fit_loop.epoch_loop._batches_that_stepped
        caption = "rows: validation images; columns: image | ground truth | prediction"
        fitting = trainer.state.fn == TrainerFn.FITTING
        stem = f"epoch_{trainer.current_epoch:04d}" if fitting else "final"
        for t, grid in grids.items():
            path = self.out_dir / t / f"{stem}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = temporary_path(path)  # a kill mid-write never leaves half a PNG
            imsave(tmp, grid, format="png")
            os.replace(tmp, path)
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    logger.log_image(f"val/qualitative/{t}", [grid], step=step, caption=[caption])
                elif isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_image(f"val/qualitative/{t}", grid, step,
                                                dataformats="HWC")
