"""Run metadata and loggers: ``run_info.json`` (how a run is grouped, and its status) and the
logger factory (CSV, wandb, TensorBoard). The callbacks are in ``training/callbacks.py``, the
checkpoint files in ``training/checkpoint.py``.

Every run keeps a CSV logger (``metrics.csv``), whatever else it logs to, because the report
(``densemtl-report``) reads the training curves from that file; wandb and TensorBoard receive the
same keys. How a run is grouped (sweep, dataset, architecture, weighting) is written to
``run_info.json`` at start and becomes wandb's group and tags; its ``status`` is ``running``,
then ``finished``, ``interrupted`` (a preemption signal; the checkpoint to resume from is named)
or ``failed``.

``metrics.csv`` survives kills: rows are appended with one ``write`` call each save (a killed
process writes all of it or none), a new column rewrites the file through a temporary file and a
rename, and a resumed run appends to the history it finds.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from densemtl.registry import Registry
from densemtl.runs.records import RUN_INFO_FILE, write_json_atomic

#: overrides that never describe an experiment (paths, Hydra's own settings)
_IGNORED_OVERRIDE_PREFIXES = ("hydra.", "hydra/", "paths.", "tracking.", "logger", "baselines=")


def plain(cfg: Any) -> Any:
    """OmegaConf → plain Python containers; anything else unchanged."""
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
        # jobs the launcher runs at once (the parallel launcher's n_jobs; None otherwise)
        "parallel_jobs": hc.launcher.get("n_jobs") if multirun else None,
        "overrides": list(hc.overrides.task),
        "choices": {k: v for k, v in plain(hc.runtime.choices).items() if v is not None},
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
            config={**plain(cfg), "run_info": info},
        )
    ]


def mark_run(output_dir: str | Path, status: str, **details: Any) -> None:
    """Set ``status`` (and ``details``, e.g. the signal and checkpoint of an interruption) in the
    run's ``run_info.json``; details of an earlier status are dropped."""
    path = Path(output_dir) / RUN_INFO_FILE
    info = json.loads(path.read_text()) if path.is_file() else {}
    for key in info.pop("status_details", []):
        info.pop(key, None)
    write_json_atomic(path, {**info, "status": status, **details,
                             "status_details": sorted(details)})


class HistoryWriter(ExperimentWriter):
    """Lightning's CSV writer made kill-proof and resumable (see the module docstring)."""

    def __init__(self, log_dir: str) -> None:
        # not super().__init__: Lightning's deletes an existing metrics.csv
        self.metrics: list[dict[str, Any]] = []
        self.hparams: dict[str, Any] = {}
        self.log_dir = log_dir
        self.metrics_file_path = os.path.join(log_dir, self.NAME_METRICS_FILE)
        os.makedirs(log_dir, exist_ok=True)
        self.metrics_keys = self._read_header()

    def _read_header(self) -> list[str]:
        try:
            with open(self.metrics_file_path, newline="") as f:
                return next(csv.reader(f), [])
        except FileNotFoundError:
            return []

    def _write_atomic(self, text: str, path: str) -> None:
        tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.tmp-{os.getpid()}"
        with open(tmp, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _rows(self, rows: list[Mapping[str, Any]], header: bool) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=self.metrics_keys, lineterminator="\n")
        if header:
            writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()

    def save(self) -> None:
        """Append the recorded rows; a new column rewrites the whole file atomically."""
        if not self.metrics:
            return
        new_keys = sorted(set().union(*self.metrics) - set(self.metrics_keys))
        exists = os.path.isfile(self.metrics_file_path)
        if new_keys or not exists:
            old: list[dict[str, Any]] = []
            if exists:
                with open(self.metrics_file_path, newline="") as f:
                    old = list(csv.DictReader(f))
            self.metrics_keys = sorted({*self.metrics_keys, *new_keys})
            self._write_atomic(self._rows(old + self.metrics, header=True),
                               self.metrics_file_path)
        else:
            data = self._rows(self.metrics, header=False).encode()
            fd = os.open(self.metrics_file_path, os.O_WRONLY | os.O_APPEND)
            try:
                written = os.write(fd, data)  # one call: a kill cannot split it
                if written != len(data):
                    raise OSError(f"short write to {self.metrics_file_path} ({written} of "
                                  f"{len(data)} bytes): disk full?")
            finally:
                os.close(fd)
        self.metrics = []

    def drop_after(self, step: int) -> None:
        """Keep only the rows logged at optimiser steps up to ``step`` (atomically)."""
        self.save()
        if not os.path.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as f:
            rows = list(csv.DictReader(f))
        kept = [r for r in rows if r.get("step") in (None, "") or int(r["step"]) <= step]
        if len(kept) < len(rows):
            self._write_atomic(self._rows(kept, header=True), self.metrics_file_path)

    def log_hparams(self, params: dict[str, Any]) -> None:
        """Record hyper-parameters into ``hparams.yaml`` (atomically)."""
        self.hparams.update(plain(params))
        self._write_atomic(yaml.safe_dump(self.hparams, sort_keys=False),
                           os.path.join(self.log_dir, self.NAME_HPARAMS_FILE))


class HistoryLogger(CSVLogger):
    """``CSVLogger`` writing ``<run dir>/metrics.csv`` through :class:`HistoryWriter`."""

    @property
    def experiment(self) -> HistoryWriter:
        if self._experiment is None:
            self._experiment = HistoryWriter(log_dir=self.log_dir)
        return self._experiment


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
    loggers: list[Logger] = [HistoryLogger(save_dir=str(output_dir), name="", version="")]
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
