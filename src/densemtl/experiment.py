"""Build a run from its (Hydra-composed) configuration, train it, evaluate it, write results.

Everything here takes plain mappings, so the same functions serve the CLI, notebooks and tests.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from densemtl.console import EpochLine, parallel_job_label, to_log_files
from densemtl.constant_predictor import constant_predictor_results
from densemtl.data.datamodule import MultiTaskDataModule
from densemtl.models import ARCHITECTURES, MultiTaskNet
from densemtl.models.adversarial import AdversarialOptions
from densemtl.registry import check_kwargs, load_plugins, parameter_names
from densemtl.resources import parameter_counts, resource_report
from densemtl.runs import (
    check_baselines,
    delta_m_of,
    load_baselines,
    run_summary,
    write_metrics,
    write_run_info,
)
from densemtl.tasks import Task, build_tasks
from densemtl.training.atrc import ATRCModule, ATRCSearchModule
from densemtl.training.base import MultiTaskModule
from densemtl.training.callbacks import (
    LoopTimer,
    RunInterrupted,
    build_callbacks,
    run_checkpoint,
    under_slurm,
)
from densemtl.training.checkpoint import (
    AtomicCheckpointIO,
    check_resumable,
    check_writable,
    checkpoint_dir,
    last_checkpoint,
    load_checkpoint,
)
from densemtl.training.joint import JointModule
from densemtl.training.logging import (
    build_loggers,
    close_loggers,
    hydra_job,
    mark_run,
    run_info,
)
from densemtl.training.single_tasking import SingleTaskingModule
from densemtl.weighting import WeightingStrategy, build_weighting

__all__ = [
    "build_datamodule", "build_module", "build_net", "build_tasks", "build_trainer",
    "build_weighting_from_config", "eval_overrides", "evaluate_checkpoint", "load_module", "run",
]

#: ``model.loop`` -> Lightning module
LOOPS = {"joint": JointModule, "single_tasking": SingleTaskingModule, "atrc": ATRCModule,
         "atrc_search": ATRCSearchModule}
#: ``model`` keys that name things or configure the training loop (not the network)
MODEL_KEYS = ("name", "arch", "loop")
#: groups an architecture builder receives when it takes them as parameters
NET_GROUPS = ("backbone",)
#: the values of the ``modulation`` options that mean "no task conditioning" (``modulation=none``)
NO_MODULATION = ("none", None, False)


@dataclass(frozen=True)
class RunOptions:
    """The top-level keys of a training config and their types (``conf/train.yaml`` holds the
    values); :func:`run` checks them with ``check_kwargs`` before building anything."""

    seed: int
    name: str | None
    single_task: str | None
    baselines: str | Mapping | None
    constant_baseline: bool
    evaluate: bool
    max_bad_steps: int
    grad_clip_norm: float | None
    ckpt_path: str | None
    plugins: Sequence[str]
    threads: int | None
    channels_last: bool


@dataclass(frozen=True)
class TrackingOptions:
    """``cfg.tracking`` (``conf/train.yaml`` documents each key)."""

    sweep: str | None
    group: str | None
    tags: Sequence[str]
    qualitative: int
    objective: str | None


@dataclass(frozen=True)
class CheckpointOptions:
    """``cfg.checkpoint`` (``conf/train.yaml`` documents each key)."""

    every_n_steps: int | None
    every_n_minutes: float | None
    stop_after_epochs: int | None


@dataclass(frozen=True)
class PathOptions:
    """``cfg.paths``."""

    data_dir: str


#: groups that configure the run itself (no builder of their own), checked like the top level
RUN_GROUPS = {"tracking": TrackingOptions, "checkpoint": CheckpointOptions, "paths": PathOptions}

#: top-level keys that are config groups, each checked by what it builds
GROUP_KEYS = ("data", "tasks", "backbone", "model", "modulation", "adversarial", "weighting",
              "optimizer", "trainer", "logger", "paths", "tracking", "checkpoint")


def cpu_threads(threads: int | None, job: Mapping[str, Any]) -> int:
    """Intra-op CPU threads for this run: ``threads`` if set, else the cores this process may
    use divided among the jobs a parallel multirun runs at once (so no core is oversubscribed:
    an oversubscribed OpenMP pool spins: 16× slower per step once here), else torch's."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads={threads}: expected a positive number of CPU threads")
        return threads
    jobs = job.get("parallel_jobs")
    if jobs:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return max(1, (cores or 1) // jobs)
    return torch.get_num_threads()


def check_run_options(cfg: Mapping[str, Any]) -> None:
    """Refuse an unknown or wrongly typed top-level, ``tracking``, ``checkpoint`` or ``paths``
    key (the other groups are checked by what they build)."""
    top = {k: v for k, v in dict(to_plain(cfg)).items() if k not in GROUP_KEYS}
    check_kwargs(RunOptions, top, "train")
    for group, options in RUN_GROUPS.items():
        check_kwargs(options, dict(to_plain(cfg[group])), group)


def to_plain(cfg: Any) -> Any:
    """OmegaConf → plain Python containers (what checkpoints and JSON may hold)."""
    if isinstance(cfg, DictConfig) or OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def split_model_config(
    cfg: Mapping[str, Any],
) -> tuple[str, type[pl.LightningModule], dict[str, Any], dict[str, Any]]:
    """``model`` config → (architecture, loop module, loop options, network options).

    The loop options are the keyword parameters of the loop's module that the ``model`` group
    carries (the single-tasking ``schedule`` and ``task_order``); everything else but the name
    configures the network."""
    model = dict(to_plain(cfg["model"]))
    for key in ("arch", "loop"):
        if key not in model:
            raise KeyError(f"model config needs '{key}' (model: {sorted(model)})")
    arch, loop = model["arch"], model["loop"]
    if loop not in LOOPS:
        raise ValueError(f"model.loop={loop!r} is not one of {', '.join(LOOPS)}")
    module = LOOPS[loop]
    loop_params = set(parameter_names(module)) - set(parameter_names(MultiTaskModule))
    loop_options = {k: v for k, v in model.items() if k in loop_params and k not in MODEL_KEYS}
    net_options = {
        k: v for k, v in model.items() if k not in MODEL_KEYS and k not in loop_options
    }
    net_params = parameter_names(ARCHITECTURES.get(arch))
    for key in net_options:  # another loop's option (e.g. the single-tasking schedule)
        other = [n for n, m in LOOPS.items() if key in parameter_names(m) and key not in net_params]
        if other:
            raise ValueError(f"model.{key} applies to model.loop={other[0]} only, not {loop}")
    return arch, module, loop_options, net_options


def build_net(cfg: Mapping[str, Any], tasks: Mapping[str, Task]) -> MultiTaskNet:
    """The network of ``cfg.model.arch`` for ``tasks``: its builder gets the ``model`` options,
    the ``backbone`` group if it takes one, and the ``modulation`` options it takes (the LSB
    networks configure their encoder in ``model`` and take neither group)."""
    arch, _, _, options = split_model_config(cfg)
    params = parameter_names(ARCHITECTURES.get(arch))
    for group in NET_GROUPS:
        if group in params:
            options[group] = dict(to_plain(cfg[group]))
    for key, value in dict(to_plain(cfg.get("modulation") or {})).items():
        if key in params:
            options[key] = value
        elif value not in NO_MODULATION:  # an option the network would silently ignore
            raise ValueError(f"modulation.{key}={value!r}: model.arch={arch} has no task "
                             "conditioning of that kind; use modulation=none")
    channels = {t: task.out_channels for t, task in tasks.items()}
    return ARCHITECTURES.build(arch, tasks=channels, **options)


def build_weighting_from_config(
    cfg: Mapping[str, Any], tasks: Mapping[str, Task]
) -> WeightingStrategy:
    """The ``cfg.weighting`` strategy; ``fixed`` without ``weights`` uses each task's weight."""
    options = dict(to_plain(cfg["weighting"]))
    name = options.pop("name")
    if name == "fixed" and options.get("weights") is None:
        options["weights"] = {t: task.weight for t, task in tasks.items()}
    return build_weighting(name, list(tasks), **options)


def build_module(cfg: Mapping[str, Any], tasks: Mapping[str, Task]) -> pl.LightningModule:
    """The Lightning module of ``cfg.model.loop`` around a freshly built network."""
    _, module, loop_options, _ = split_model_config(cfg)
    adversarial = dict(to_plain(cfg["adversarial"]))
    if issubclass(module, JointModule):
        if AdversarialOptions.from_config(adversarial).enabled:  # checks the keys, too
            raise ValueError("adversarial.enabled needs model.loop=single_tasking")
    else:
        loop_options["adversarial"] = adversarial
    return module(
        net=build_net(cfg, tasks),
        tasks=tasks,
        optimizer=dict(to_plain(cfg["optimizer"])),
        config=to_plain(cfg),
        weighting=build_weighting_from_config(cfg, tasks),
        max_bad_steps=cfg["max_bad_steps"],
        grad_clip_norm=cfg["grad_clip_norm"],
        channels_last=cfg["channels_last"],
        **loop_options,
    )


def build_datamodule(cfg: Mapping[str, Any], tasks: Mapping[str, Task]) -> MultiTaskDataModule:
    """DataModule for ``cfg.data`` over the given tasks."""
    return MultiTaskDataModule.from_config(dict(cfg["data"]), tasks)


def build_trainer(
    cfg: Mapping[str, Any],
    output_dir: Path,
    info: Mapping[str, Any],
    baselines: Mapping | None = None,
    *extra: pl.Callback,
) -> pl.Trainer:
    """Trainer with the configured arguments (checked against ``pl.Trainer``'s), the run's
    checkpoint, the loggers (``info``: the run info), the tracking callbacks (learning rates, Δm
    against ``baselines``, qualitative grids; see ``training/callbacks.py``), the console's (see
    ``console.py``) and ``extra`` callbacks."""
    targs = dict(to_plain(cfg["trainer"]))
    check_kwargs(pl.Trainer, targs, "trainer")
    label = parallel_job_label(hydra_job())
    if label is not None:  # jobs share the console: one labelled line per epoch, no bars
        targs["enable_progress_bar"] = False
        extra = (*extra, EpochLine(label))
    plugins: list[Any] = [AtomicCheckpointIO()]
    if under_slurm():  # RunCheckpoint handles SLURM's signals (Lightning's would requeue too)
        from lightning_fabric.plugins.environments import SLURMEnvironment

        plugins.append(SLURMEnvironment(auto_requeue=False))
    return pl.Trainer(
        default_root_dir=str(output_dir),
        logger=build_loggers(cfg, output_dir, info),
        callbacks=[*build_callbacks(cfg, output_dir, baselines), *extra],
        plugins=plugins,
        **targs,
    )


def resume_checkpoint(cfg: Mapping[str, Any], output_dir: Path) -> Path | None:
    """The checkpoint a run continues from: ``cfg.ckpt_path``, else the run directory's own
    ``last.ckpt`` (a requeued job, ``densemtl-train resume=<run dir>``), else none."""
    if cfg["ckpt_path"] is not None:
        return Path(cfg["ckpt_path"])
    return last_checkpoint(output_dir)


def run(cfg: Mapping[str, Any], output_dir: str | Path) -> dict[str, Any]:
    """Train (and evaluate) one configured run; returns the ``metrics.json`` payload (empty
    when ``checkpoint.stop_after_epochs`` ended it early).

    Everything the config names is built (and so checked) before the first batch: tasks, data
    module, network, weighting, optimiser options, trainer, loggers, the output directory; the
    baselines are checked against the tasks and their metric conventions before any data is read.

    ``train_seconds`` is the training loop alone and ``setup_seconds`` everything before it (data
    rendering, building, the first job's warm-up), so runs compare whatever ran before them in
    the same worker. The loggers are closed at the end, also when the run fails (every job of a
    multirun is its own wandb run)."""
    started = time.perf_counter()
    output_dir = Path(output_dir)
    check_run_options(cfg)
    output_dir.mkdir(parents=True, exist_ok=True)
    load_plugins(cfg["plugins"])
    pl.seed_everything(cfg["seed"], workers=True)
    # subnormal floats (e.g. in decays towards zero) slow CPU convolutions 10-100×; flushing
    # them changes results by < 1e-38 per value (no effect on GPUs)
    torch.set_flush_denormal(True)
    torch.set_num_threads(cpu_threads(cfg["threads"], hydra_job()))
    tasks = build_tasks(cfg)
    baselines = load_baselines(to_plain(cfg["baselines"]))
    if baselines is not None:
        check_baselines(baselines, tasks)
    info = {**run_info(cfg), "run_dir": str(output_dir.resolve()),
            "threads": torch.get_num_threads()}
    write_run_info(output_dir, {**info, "status": "running", "status_details": []})
    datamodule = build_datamodule(cfg, tasks)
    if cfg["constant_baseline"]:
        return constant_baseline(cfg, tasks, datamodule, output_dir)
    module = build_module(cfg, tasks)
    datamodule.check_input_size(module.net.output_stride, f"model.arch={cfg['model']['arch']}")
    params = parameter_counts(module.net, list(tasks))
    print(f"{info['architecture']} · {', '.join(tasks)} · weighting {info['weighting']}: "
          f"{params['total'] / 1e6:.2f} M parameters ({params['shared'] / 1e6:.2f} M shared)")
    # room for a checkpoint being written next to the previous one (weights + optimiser state)
    check_writable(checkpoint_dir(output_dir), 6 * sum(
        p.numel() * p.element_size() for p in module.parameters()) + 2**20)
    ckpt_path = resume_checkpoint(cfg, output_dir)
    if ckpt_path is not None:
        check_resumable(ckpt_path, to_plain(cfg))
        print(f"Resuming from {ckpt_path}")
    timer = LoopTimer()
    trainer = build_trainer(cfg, output_dir, info, baselines, timer)
    guard = run_checkpoint(trainer)
    payload: dict[str, Any] | None = None
    try:
        try:
            with guard.signals_caught():
                trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except RunInterrupted:
            raise  # RunCheckpoint marked the run
        except BaseException as err:
            mark_run(output_dir, "failed", error=f"{type(err).__name__}: {err}")
            raise
        if guard.stopped_early:
            mark_run(output_dir, "stopped",
                     checkpoint=str(checkpoint_dir(output_dir) / "last.ckpt"),
                     epoch=trainer.current_epoch)
            payload = {}
            return payload
        if not cfg["evaluate"]:
            mark_run(output_dir, "finished")
            payload = {}
            return payload
        if module.val_results_step != trainer.global_step:  # the last epoch did not validate
            trainer.validate(module, datamodule=datamodule, verbose=False)
        data = cfg["data"]
        size = data.get("crop_size") or data.get("size") or 512
        size = int(size if isinstance(size, int) else max(size))
        cost = resource_report(module.net, list(tasks), size)
        payload = finish(cfg, module, output_dir, baselines, train_seconds=timer.seconds,
                         setup_seconds=timer.started - started, resources=cost, run=info)
        mark_run(output_dir, "finished")
        return payload
    finally:
        close_loggers(trainer.loggers, payload)


def constant_baseline(
    cfg: Mapping[str, Any], tasks: Mapping[str, Task], datamodule, output_dir: Path
) -> dict[str, Any]:
    """Score the best constant predictor on the validation set; writes ``metrics.json``."""
    datamodule.prepare_data()
    datamodule.setup("fit")
    results = constant_predictor_results(
        datamodule.train_dataloader(), datamodule.val_dataloader(), tasks
    )
    payload = {"name": "constant", "dataset": cfg["data"]["name"], "tasks": results,
               "config": to_plain(cfg)}
    write_metrics(output_dir, payload)
    print(run_summary(payload, output_dir))
    return payload


def finish(
    cfg: Mapping[str, Any],
    module: pl.LightningModule,
    output_dir: Path,
    baselines: Mapping | None,
    **extra: Any,
) -> dict[str, Any]:
    """Write ``metrics.json`` for a validated module and print the summary table."""
    results = module.val_results
    payload: dict[str, Any] = {
        "name": cfg["name"],
        "dataset": cfg["data"]["name"],
        "tasks": results,
        # evaluation choices behind the values (edge NMS / AP, normals median, absent classes)
        "protocol": {name: task.protocol() for name, task in module.tasks.items()},
        "config": to_plain(cfg),
        **extra,
    }
    if baselines is not None:
        payload["delta_m"] = delta_m_of(results, baselines, module.tasks)
    write_metrics(output_dir, payload)
    summary = run_summary(payload, output_dir)
    print(summary)
    to_log_files(summary)
    return payload


def load_module(
    ckpt_path: str | Path, overrides: Mapping[str, Any] | None = None
) -> pl.LightningModule:
    """Rebuild a trained module from a checkpoint (loaded with ``weights_only=True``);
    ``overrides`` are merged over the checkpoint's config first (evaluation settings such as
    ``data.task_args.sal.convention``; they must not change the network)."""
    path = Path(ckpt_path)
    ckpt = load_checkpoint(path)
    cfg = ckpt.get("hyper_parameters", {}).get("config")
    if not cfg:
        raise ValueError(f"checkpoint {path} holds no densemtl config (hyper_parameters.config)")
    load_plugins(cfg.get("plugins") or [])  # configs saved before plugins existed lack the key
    trained = {t: task.out_channels for t, task in build_tasks(cfg).items()}
    if overrides:
        cfg = to_plain(OmegaConf.merge(OmegaConf.create(cfg), OmegaConf.create(dict(overrides))))
    tasks = build_tasks(cfg)
    changed = [t for t, task in tasks.items() if trained.get(t) != task.out_channels]
    if changed or set(tasks) != set(trained):
        raise ValueError(f"overrides {dict(overrides or {})} change the network's outputs "
                         f"({ {t: tasks[t].out_channels for t in tasks} } instead of the "
                         f"checkpoint's {trained}); {path} can only be evaluated as trained")
    module = build_module(cfg, tasks)
    module.load_state_dict(ckpt["state_dict"])
    return module


#: the top-level keys of ``conf/eval.yaml``: anything else (``+model.…``) is refused
EVAL_KEYS = ("ckpt_path", "baselines", "plugins", "data", "trainer", "logger", "paths")
#: the ``data`` keys ``densemtl-eval`` may override: how the validation images are loaded and
#: scored, never which images (``n``, ``size``, ``seed``, splits, ``root``) or the network
EVAL_DATA_KEYS = ("batch_size", "num_workers", "task_args")


def eval_overrides(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The ``data`` settings an evaluation config changes in the checkpoint's config (``data.
    batch_size`` becomes ``data.val_batch_size``, the only batch size validation uses); any
    other key is refused: evaluation rebuilds the network and the data from the checkpoint."""
    plain = dict(to_plain(cfg))
    unknown = [k for k in plain if k not in EVAL_KEYS]
    data = {k: v for k, v in dict(plain.get("data") or {}).items() if v not in (None, {})}
    other = [f"data.{k}" for k in data if k not in EVAL_DATA_KEYS]
    if unknown or other:
        raise ValueError(
            f"densemtl-eval evaluates {cfg['ckpt_path']} as it was trained, on its own data: "
            f"{', '.join(unknown + other)} cannot be overridden (the network and the evaluation "
            f"images come from the checkpoint's config); evaluation may set "
            f"{', '.join(f'data.{k}' for k in EVAL_DATA_KEYS)} and {', '.join(EVAL_KEYS[:3])}, "
            "trainer, logger, paths")
    if "batch_size" in data:
        data["val_batch_size"] = data.pop("batch_size")
    return {"data": data} if data else {}


def evaluate_checkpoint(cfg: Mapping[str, Any], output_dir: str | Path) -> dict[str, Any]:
    """Validate the checkpoint ``cfg.ckpt_path`` on its run's dataset, with the loading and
    metric settings :func:`eval_overrides` allows merged over the run's config; writes
    ``metrics.json``, whose ``eval_overrides`` states what was changed. The baselines are
    checked against the tasks before any data is read."""
    output_dir = Path(output_dir)
    load_plugins(cfg["plugins"])
    overrides = eval_overrides(cfg)
    module = load_module(cfg["ckpt_path"], overrides)
    baselines = load_baselines(to_plain(cfg["baselines"]))
    if baselines is not None:
        check_baselines(baselines, module.tasks)
    run_cfg = OmegaConf.create(module.hparams["config"])
    datamodule = build_datamodule(run_cfg, module.tasks)
    targs = {k: v for k, v in dict(to_plain(cfg["trainer"])).items() if k != "max_epochs"}
    check_kwargs(pl.Trainer, targs, "trainer")
    trainer = pl.Trainer(default_root_dir=str(output_dir), logger=False, **targs)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    return finish(run_cfg, module, output_dir, baselines, checkpoint=str(cfg["ckpt_path"]),
                  eval_overrides=overrides)
