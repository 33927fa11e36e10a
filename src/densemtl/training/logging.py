"""Experiment tracking: loggers (CSV, wandb, TensorBoard), run grouping, and the callbacks that
log learning rates, Δm and qualitative prediction grids.

Every run keeps a CSV logger (``metrics.csv``), whatever else it logs to, because the report
(``densemtl-report``) reads the training curves from that file; wandb and TensorBoard receive the
same keys. How a run is grouped (sweep, dataset, architecture, weighting) is written to
``run_info.json`` at start and becomes wandb's group and tags.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from pytorch_lightning.trainer.states import TrainerFn

from densemtl.registry import Registry
from densemtl.runs import delta_m_of

#: overrides that never describe an experiment (paths, Hydra's own settings)
_IGNORED_OVERRIDE_PREFIXES = ("hydra.", "hydra/", "paths.", "tracking.", "logger", "baselines=")


def _plain(cfg: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg


def hydra_job() -> dict[str, Any]:
    """Sweep directory, job number, launcher, command-line overrides and group choices of the
    running Hydra job; empty outside a Hydra app (compose mode, notebooks)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    return {
        "sweep_dir": str(hc.sweep.dir) if multirun else None,
        "job_num": int(hc.job.num) if multirun else None,
        "launcher": hc.launcher.get("_target_") if multirun else None,
        "overrides": list(hc.overrides.task),
        "choices": {k: v for k, v in _plain(hc.runtime.choices).items() if v is not None},
    }


def run_info(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """How a run is grouped on dashboards and in reports: sweep, dataset, architecture,
    weighting, seed, wandb group and tags, and the overrides that made it (if launched by Hydra).

    ``cfg.tracking.{sweep, group, tags}`` override the derived values (the sweep presets name
    their sweep); without them the group is the sweep (or the run's name when it is no sweep).
    """
    tracking = dict(cfg.get("tracking") or {})
    job = hydra_job()
    choices = job.get("choices", {})
    model = dict(cfg.get("model") or {})
    backbone = dict(cfg.get("backbone") or {})
    if model.get("arch") == "atrc":  # ATRC configures its HRNet in model.encoder
        backbone = {"name": model.get("encoder")}
    mod = dict(cfg.get("modulation") or {})
    parts = [f"se_{mod['se']}"] if mod.get("se", "none") != "none" else []
    parts += ["adapters"] if mod.get("adapters") else []
    modulation = choices.get("modulation") or "+".join(parts) or "none"
    adversarial = bool(dict(cfg.get("adversarial") or {}).get("enabled"))
    sweep = tracking.get("sweep") or (Path(job["sweep_dir"]).name if job.get("sweep_dir") else None)
    info = {
        "name": cfg.get("name"),
        "sweep": sweep,
        "job_num": job.get("job_num"),
        "dataset": dict(cfg.get("data") or {}).get("name"),
        "architecture": f"{model.get('name')}/{backbone.get('name')}/{modulation}"
        + ("+adversarial" * adversarial),
        "model": model.get("name"),
        "backbone": backbone.get("name"),
        "modulation": modulation,
        "adversarial": adversarial,
        "weighting": dict(cfg.get("weighting") or {}).get("name", "fixed"),
        "single_task": cfg.get("single_task"),
        "seed": cfg.get("seed"),
        "overrides": [
            o for o in job.get("overrides", []) if not o.lstrip("+~").startswith(
                _IGNORED_OVERRIDE_PREFIXES)
        ],
    }
    tags = [f"{k}:{info[k]}" for k in ("dataset", "model", "backbone", "modulation", "weighting")]
    tags += [f"sweep:{sweep}"] * bool(sweep) + ["adversarial"] * adversarial
    tags += [f"single_task:{info['single_task']}"] * bool(info["single_task"])
    info["group"] = tracking.get("group") or sweep or info["name"]
    info["tags"] = tags + [str(t) for t in tracking.get("tags") or []]
    return info


def run_label(info: Mapping[str, Any]) -> str:
    """Display name of a run: its name plus the overrides that distinguish it."""
    return " ".join([str(info.get("name")), *info.get("overrides", [])]).strip()


#: every logger besides the CSV one, by ``logger.name``: ``(output_dir, cfg, info, **options)``
#: -> the extra loggers
LOGGERS: Registry[Callable[..., list[Logger]]] = Registry("logger", "logger", ["densemtl.training"])


@LOGGERS.register("csv")
def csv_only(output_dir: Path, cfg: Mapping[str, Any], info: Mapping[str, Any]) -> list[Logger]:
    """No logger besides the CSV one every run keeps."""
    return []


@LOGGERS.register("tensorboard")
def tensorboard(
    output_dir: Path, cfg: Mapping[str, Any], info: Mapping[str, Any]
) -> list[Logger]:
    """TensorBoard event files in ``<run dir>/tensorboard``."""
    return [TensorBoardLogger(save_dir=str(output_dir), name="tensorboard", version="")]


@LOGGERS.register("wandb")
def wandb(
    output_dir: Path,
    cfg: Mapping[str, Any],
    info: Mapping[str, Any],
    project: str = "densemtl",
    entity: str | None = None,
    offline: bool = True,
) -> list[Logger]:
    """wandb, offline into ``<run dir>/wandb`` unless ``offline=false``, grouped and tagged by
    the run info."""
    return [
        WandbRun(
            project=project,
            entity=entity,
            name=run_label(info),
            group=info["group"],
            tags=info["tags"],
            job_type=info["architecture"],
            save_dir=str(output_dir),
            offline=offline,
            config={**_plain(cfg), "run_info": info},
        )
    ]


def build_loggers(
    cfg: Mapping[str, Any], output_dir: str | Path, info: Mapping[str, Any]
) -> list[Logger]:
    """CSV logger (always: the report reads ``metrics.csv``) plus ``cfg.logger.name``'s loggers.

    wandb runs offline into ``<run dir>/wandb`` unless ``logger.offline=false`` (sync later with
    ``wandb sync <run dir>/wandb/offline-run-*``); TensorBoard writes ``<run dir>/tensorboard``.
    ``info`` is the run's :func:`run_info`.
    """
    output_dir = Path(output_dir)
    options = dict(cfg["logger"])
    name = options.pop("name")
    loggers: list[Logger] = [CSVLogger(save_dir=str(output_dir), name="", version="")]
    return loggers + LOGGERS.build(name, output_dir, cfg, info, **options)


class WandbRun(WandbLogger):
    """Lightning's wandb logger for exactly one run: :meth:`close` finishes it.

    Lightning's logger reuses any wandb run still open in the process ("There is a wandb run
    already in progress"), so without an explicit finish every later job of a multirun (Hydra's
    basic launcher, joblib's reused workers) logs into the first job's run.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Lightning always passes anonymous=None, which wandb >= 0.31 warns about as deprecated
        self._wandb_init.pop("anonymous", None)

    def close(self, summary: Mapping[str, Any] | None) -> None:
        """Write ``summary`` into the run's summary and finish it (exit code 1 without one:
        the job failed); a no-op if the run was never started."""
        run = self._experiment
        if run is None or not hasattr(run, "finish"):
            return
        if summary:
            run.summary.update(dict(summary))
        run.finish(exit_code=0 if summary is not None else 1)
        self._experiment = None


def run_summary_values(payload: Mapping[str, Any]) -> dict[str, float]:
    """The scalars a dashboard's run summary holds besides the last logged values: parameters,
    multiply-adds, training-loop and set-up seconds, Δm (keys as in the README's table)."""
    res = payload.get("resources") or {}
    values = {
        "cost/parameters": (res.get("parameters") or {}).get("total"),
        "cost/multiply_adds": (res.get("multiply_adds") or {}).get("all_tasks"),
        "time/train_seconds": payload.get("train_seconds"),
        "time/setup_seconds": payload.get("setup_seconds"),
        **{f"val/{k}": v for k, v in (payload.get("delta_m") or {}).items()},
    }
    return {k: v for k, v in values.items() if v is not None}


def close_loggers(loggers: Sequence[Logger], payload: Mapping[str, Any] | None) -> None:
    """End of a job, finished (``payload``: its ``metrics.json``) or failed (None): every wandb
    run gets the job's summary and is finished, so the next job opens its own run."""
    for logger in loggers:
        if isinstance(logger, WandbRun):
            logger.close(None if payload is None else run_summary_values(payload))


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
    """Learning-rate monitor, Δm at every validation (with the run's loaded ``baselines``) and
    the qualitative grids (``cfg.tracking.qualitative`` images, 0 = off)."""
    tracking = dict(cfg.get("tracking") or {})
    callbacks: list[pl.Callback] = [LearningRates()]
    if baselines is not None:
        callbacks.append(DeltaMMonitor(baselines))
    n_images = int(tracking.get("qualitative", 4))
    if n_images > 0:
        from densemtl.data.transforms import IMAGENET_MEAN, IMAGENET_STD

        augment = dict(dict(cfg.get("data") or {}).get("augment") or {})
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


def tile(rows: Sequence[Sequence[np.ndarray]], gap: int = 2) -> np.ndarray:
    """Equal-size ``H×W×3`` pictures laid out as a grid with white ``gap``-pixel separators."""
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
) -> dict[str, np.ndarray]:
    """Per task a ``uint8`` grid: one row per image, columns image | ground truth | prediction,
    drawn with the task's own colour map (the panels of ``analysis.qualitative``)."""
    from densemtl.analysis.qualitative import ValidationBatch, qualitative_panels

    data = ValidationBatch(dict(batch), tuple(mean), tuple(std))
    n = batch["image"].shape[0]
    rows = qualitative_panels({"prediction": module}, data, indices=range(n))
    pairs = list(zip(rows[::2], rows[1::2]))  # (ground-truth row, prediction row) per image
    return {
        t: tile([[truth.panels["image"], truth.panels[t], pred.panels[t]] for truth, pred in pairs])
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
            imsave(path, grid)
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    logger.log_image(f"val/qualitative/{t}", [grid], step=step, caption=[caption])
                elif isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_image(f"val/qualitative/{t}", grid, step,
                                                dataformats="HWC")
