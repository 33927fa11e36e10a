"""Build a run from its (Hydra-composed) configuration, train it, evaluate it, write results.

Everything here takes plain mappings, so the same functions serve the CLI, notebooks and tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from densemtl.baselines import constant_predictor_results
from densemtl.data.datamodule import MultiTaskDataModule
from densemtl.models import DenseMTLNet
from densemtl.models.lsb_nets import LSB_ARCHITECTURES, LsbNet, build_lsb_net
from densemtl.report.tables import run_summary
from densemtl.resources import resource_report
from densemtl.results import delta_m_of, format_table, load_baselines, write_json_atomic
from densemtl.tasks import Task, build_task
from densemtl.training.callbacks import AtomicCheckpointIO
from densemtl.training.joint import JointModule
from densemtl.training.logging import build_callbacks, build_loggers, write_run_info
from densemtl.training.single_tasking import SingleTaskingModule
from densemtl.weighting import WeightingStrategy, build_weighting

LOOPS = ("joint", "single_tasking")


def to_plain(cfg: Any) -> Any:
    """OmegaConf → plain Python containers (what checkpoints and JSON may hold)."""
    if isinstance(cfg, DictConfig) or OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def build_tasks(cfg: Mapping[str, Any]) -> dict[str, Task]:
    """Task objects from ``cfg.tasks`` (name → constructor kwargs) plus the dataset's task
    arguments (``cfg.data.task_args``, e.g. the number of semantic classes); ``cfg.single_task``
    keeps one task of the set (the single-task baselines)."""
    tasks_cfg = cfg.get("tasks") or {}
    if not tasks_cfg:
        raise ValueError("config 'tasks' is empty: choose a task set, e.g. tasks=pascal5")
    only = cfg.get("single_task")
    if only is not None:
        if only not in tasks_cfg:
            raise ValueError(
                f"single_task={only!r} is not in the task set ({', '.join(tasks_cfg)})"
            )
        tasks_cfg = {only: tasks_cfg[only]}
    data_args = (cfg.get("data") or {}).get("task_args") or {}
    tasks = {}
    for name, kwargs in tasks_cfg.items():
        args = {**(data_args.get(name) or {}), **(kwargs or {})}
        tasks[name] = build_task(name, **args)
    return tasks


def build_deeplab_net(cfg: Mapping[str, Any], tasks: Mapping[str, Task]) -> DenseMTLNet:
    """``DenseMTLNet`` of ``cfg.model`` + ``cfg.backbone`` + ``cfg.modulation`` for ``tasks``."""
    model, mod = cfg["model"], cfg.get("modulation") or {}
    return DenseMTLNet(
        {t: task.out_channels for t, task in tasks.items()},
        backbone=dict(cfg["backbone"]),
        decoder=model.get("decoder", "deeplab"),
        decoder_width=int(model.get("decoder_width", 64)),
        se=mod.get("se", "none"),
        per_task_bn=mod.get("per_task_bn"),
        adapters=bool(mod.get("adapters", False)),
        execution=model.get("execution", "sequential"),
    )


def build_lsb_study_net(cfg: Mapping[str, Any], tasks: Mapping[str, Task]) -> LsbNet:
    """An LSB-study network (``model.arch`` = lsb_*); its encoder is in ``cfg.model``, so the
    ``backbone`` and ``modulation`` groups do not apply."""
    model = cfg["model"]
    return build_lsb_net(
        model["arch"],
        {t: task.out_channels for t, task in tasks.items()},
        encoder=model.get("encoder", "mobilenetv2"),
        encoder_width=float(model.get("encoder_width", 1.0)),
        decoder_width=int(model.get("decoder_width", 512)),
        pretrained_path=model.get("pretrained_path"),
        stitch_init=model.get("stitch_init"),
    )


#: ``model.arch`` -> network builder (cfg, tasks) -> net with the ``DenseMTLNet`` API.
ARCHITECTURES: dict[str, Callable[[Mapping[str, Any], Mapping[str, Task]], nn.Module]] = {
    "deeplab": build_deeplab_net,
    **dict.fromkeys(LSB_ARCHITECTURES, build_lsb_study_net),
}


def build_net(cfg: Mapping[str, Any], tasks: Mapping[str, Task]) -> nn.Module:
    """The network of ``cfg.model.arch`` (default ``deeplab``, the ASTMT ``DenseMTLNet``)."""
    arch = cfg["model"].get("arch", "deeplab")
    if arch not in ARCHITECTURES:
        raise ValueError(f"model.arch={arch!r} is not one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch](cfg, tasks)


def build_weighting_from_config(
    cfg: Mapping[str, Any], tasks: Mapping[str, Task]
) -> WeightingStrategy:
    """The ``cfg.weighting`` strategy; ``fixed`` without ``weights`` uses each task's weight."""
    options = dict(cfg.get("weighting") or {"name": "fixed"})
    name = options.pop("name", "fixed")
    if name == "fixed" and options.get("weights") is None:
        options["weights"] = {t: task.weight for t, task in tasks.items()}
    return build_weighting(name, list(tasks), **options)


def build_module(cfg: Mapping[str, Any], tasks: Mapping[str, Task]) -> pl.LightningModule:
    """The Lightning module of ``cfg.model.loop`` around a freshly built network."""
    loop = cfg["model"].get("loop", "joint")
    if loop not in LOOPS:
        raise ValueError(f"model.loop={loop!r} is not one of {', '.join(LOOPS)}")
    net = build_net(cfg, tasks)
    common = dict(
        net=net,
        tasks=tasks,
        optimizer=dict(cfg["optimizer"]),
        config=to_plain(cfg),
        weighting=build_weighting_from_config(cfg, tasks),
        max_bad_steps=int(cfg.get("max_bad_steps", 20)),
    )
    if loop == "joint":
        if (cfg.get("adversarial") or {}).get("enabled"):
            raise ValueError("adversarial.enabled needs model.loop=single_tasking")
        return JointModule(**common)
    return SingleTaskingModule(
        **common,
        schedule=cfg["model"].get("schedule", "per_task"),
        task_order=cfg["model"].get("task_order"),
        adversarial=dict(cfg.get("adversarial") or {}),
        feature_channels=int(cfg["model"].get("decoder_width", 64)),
    )


def build_datamodule(cfg: Mapping[str, Any], tasks: Mapping[str, Task]) -> MultiTaskDataModule:
    """DataModule for ``cfg.data`` over the given tasks."""
    return MultiTaskDataModule.from_config(dict(cfg["data"]), tasks)


def build_trainer(cfg: Mapping[str, Any], output_dir: Path) -> pl.Trainer:
    """Trainer with the configured arguments, a crash-safe ``last.ckpt``, the loggers and the
    tracking callbacks (learning rates, Δm, qualitative grids; see ``training/logging.py``)."""
    targs = dict(cfg.get("trainer") or {})
    # last.ckpt after every training epoch, before validation: a crash later never costs the
    # epoch's training
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=str(output_dir / "checkpoints"), save_last=True, save_top_k=0,
        save_on_train_epoch_end=True,
    )
    return pl.Trainer(
        default_root_dir=str(output_dir),
        logger=build_loggers(cfg, output_dir),
        callbacks=[checkpoint, *build_callbacks(cfg, output_dir)],
        plugins=[AtomicCheckpointIO()],
        **targs,
    )


def run(cfg: Mapping[str, Any], output_dir: str | Path) -> dict[str, Any]:
    """Train (and evaluate) one configured run; returns the ``metrics.json`` payload."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(int(cfg.get("seed", 0)), workers=True)
    # subnormal floats (e.g. in decays towards zero) slow CPU convolutions 10-100×; flushing
    # them changes results by < 1e-38 per value (no effect on GPUs)
    torch.set_flush_denormal(True)
    tasks = build_tasks(cfg)
    baselines = load_baselines(to_plain(cfg.get("baselines")))
    info = write_run_info(cfg, output_dir)
    datamodule = build_datamodule(cfg, tasks)
    if cfg.get("constant_baseline"):
        return constant_baseline(cfg, tasks, datamodule, output_dir)
    module = build_module(cfg, tasks)
    trainer = build_trainer(cfg, output_dir)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    train_seconds = time.perf_counter() - start
    if not cfg.get("evaluate", True):
        return {}
    if module.val_results_step != trainer.global_step:  # the last epoch did not validate
        trainer.validate(module, datamodule=datamodule, verbose=False)
    data = cfg["data"]
    size = data.get("crop_size") or data.get("size") or 512
    size = int(size if isinstance(size, int) else max(size))
    cost = resource_report(module.net, list(tasks), size)
    return finish(cfg, module, output_dir, baselines, train_seconds=train_seconds, resources=cost,
                  run=info)


def constant_baseline(
    cfg: Mapping[str, Any], tasks: Mapping[str, Task], datamodule, output_dir: Path
) -> dict[str, Any]:
    """Score the best constant predictor on the validation set; writes ``metrics.json``."""
    datamodule.prepare_data()
    datamodule.setup("fit")
    results = constant_predictor_results(
        datamodule.train_dataloader(), datamodule.val_dataloader(), tasks
    )
    payload = {"name": "constant", "dataset": cfg["data"].get("name"), "tasks": results,
               "config": to_plain(cfg)}
    path = write_json_atomic(output_dir / "metrics.json", payload)
    print(f"\nConstant predictor:\n{format_table(results, tasks)}\nWritten: {path}")
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
        "name": cfg.get("name"),
        "dataset": dict(cfg.get("data") or {}).get("name"),
        "tasks": results,
        "config": to_plain(cfg),
        **extra,
    }
    if baselines is not None:
        payload["delta_m"] = delta_m_of(results, baselines, module.tasks)
    write_json_atomic(output_dir / "metrics.json", payload)
    print(run_summary(payload, output_dir))
    return payload


def load_module(ckpt_path: str | Path) -> pl.LightningModule:
    """Rebuild a trained module from a checkpoint (loaded with ``weights_only=True``)."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    cfg = ckpt.get("hyper_parameters", {}).get("config")
    if not cfg:
        raise ValueError(f"checkpoint {path} holds no densemtl config (hyper_parameters.config)")
    tasks = build_tasks(cfg)
    module = build_module(cfg, tasks)
    module.load_state_dict(ckpt["state_dict"])
    return module


def evaluate_checkpoint(cfg: Mapping[str, Any], output_dir: str | Path) -> dict[str, Any]:
    """Validate the checkpoint ``cfg.ckpt_path`` on its run's dataset; writes ``metrics.json``."""
    output_dir = Path(output_dir)
    module = load_module(cfg["ckpt_path"])
    run_cfg = OmegaConf.merge(
        OmegaConf.create(module.hparams["config"]), {"data": to_plain(cfg.get("data") or {})}
    )
    datamodule = build_datamodule(run_cfg, module.tasks)
    targs = {k: v for k, v in dict(cfg.get("trainer") or {}).items() if k != "max_epochs"}
    trainer = pl.Trainer(default_root_dir=str(output_dir), logger=False, **targs)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    baselines = load_baselines(cfg.get("baselines"))
    return finish(run_cfg, module, output_dir, baselines, checkpoint=str(cfg["ckpt_path"]))
