"""What the joint and single-tasking Lightning modules share: validation, metrics, optimisers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from densemtl.tasks import Task
from densemtl.training.optim import build_optimizer, build_schedule, check_optimizer_config
from densemtl.weighting import WeightingOutput, WeightingStrategy, build_weighting


class MultiTaskModule(pl.LightningModule):
    """Holds the network, the task objects and their validation metrics.

    Subclasses implement ``training_step``. ``config`` is the run's plain-dict configuration; it is
    the only hyper-parameter saved, so checkpoints load with ``torch.load(weights_only=True)``.
    ``weighting`` combines the task losses (default: fixed, each task's own weight); it is a
    submodule, so its state (histories, learned parameters) travels in the checkpoint.
    ``channels_last`` keeps the network's 4-D weights in NHWC order, which the convolution
    kernels run faster (``benchmarks/bench_default_step.py``); the first convolution then gives
    NHWC activations whatever the images' order. Results agree with the default order to float
    rounding.
    """

    def __init__(
        self,
        net: nn.Module,
        tasks: Mapping[str, Task],
        optimizer: Mapping[str, Any],
        config: Mapping[str, Any] | None = None,
        weighting: WeightingStrategy | None = None,
        max_bad_steps: int = 20,
        grad_clip_norm: float | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters({"config": dict(config or {})})
        self.net = net.to(memory_format=torch.channels_last if channels_last
                          else torch.contiguous_format)
        self.tasks = dict(tasks)
        self.task_names = list(self.tasks)
        self.weighting = weighting or build_weighting(
            "fixed", self.task_names, weights={t: task.weight for t, task in self.tasks.items()}
        )
        if list(self.weighting.tasks) != self.task_names:
            raise ValueError(
                f"weighting tasks {list(self.weighting.tasks)} differ from {self.task_names}"
            )
        self._check_representation()
        check_optimizer_config(optimizer)  # fail at start, not when the trainer calls for it
        self.optimizer_cfg = dict(optimizer)
        self.val_metrics = nn.ModuleDict({t: task.make_metric() for t, task in self.tasks.items()})
        self.val_results: dict[str, dict[str, float]] = {}
        self.val_results_step = -1
        self.max_bad_steps = int(max_bad_steps)
        if grad_clip_norm is not None and not (isinstance(grad_clip_norm, int | float)
                                               and grad_clip_norm > 0):
            raise ValueError(f"grad_clip_norm must be a number > 0 or null, got {grad_clip_norm!r}")
        self.grad_clip_norm = None if grad_clip_norm is None else float(grad_clip_norm)
        self.bad_steps = 0
        #: minibatches of the whole run, fixed when it starts and kept in its checkpoints
        self.horizon: int | None = None

    def _check_representation(self) -> None:
        """Refuse at start-up a strategy that takes gradients w.r.t. the shared representation
        when the network has none (task-conditioned layers interleave with shared ones)."""
        if self.weighting.needs.wrt != "representation" or getattr(
                self.net, "has_shared_representation", True):
            return
        fix = ("weighting.space=parameters (gradients w.r.t. the shared parameters)"
               if hasattr(self.weighting, "space") else "another weighting")
        raise ValueError(
            f"weighting {self.weighting.name!r} takes gradients w.r.t. the shared "
            f"representation, but the network ({type(self.net).__name__}) has none: its shared "
            "and task-specific layers interleave (e.g. task-conditioned layers, modulation="
            f"se_decoder); use {fix}, or a network without task conditioning (modulation=none)")

    # -- losses -------------------------------------------------------------------------------
    def task_losses(self, preds: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> dict:
        """Unweighted loss per task of ``preds`` against the batch labels."""
        return {t: self.tasks[t].loss(preds[t], batch[t]) for t in preds}

    def losses_finite(self, losses: Mapping[str, Tensor]) -> bool:
        """True if every loss is finite on every process (all processes take the same branch).

        A non-finite step is skipped and logged with the task names; after ``max_bad_steps``
        consecutive bad steps training stops with a clear message (the last good checkpoint stays).
        """
        bad = [t for t, v in losses.items() if not torch.isfinite(v.detach()).all()]
        ok = self.trainer.strategy.reduce_boolean_decision(not bad, all=True)
        if ok:
            self.bad_steps = 0
            return True
        self.bad_steps += 1
        names = ", ".join(bad) or "(another process)"
        self.print(f"step {self.global_step}: non-finite loss in {names}; step skipped")
        if self.bad_steps >= self.max_bad_steps:
            raise RuntimeError(
                f"{self.bad_steps} consecutive steps with non-finite losses (last: {names}); "
                f"stopping. {self.last_checkpoint_note()}"
            )
        return False

    def last_checkpoint_note(self) -> str:
        """Where the run's last checkpoint is, or that none was written yet."""
        for callback in self.trainer.checkpoint_callbacks:
            path = getattr(callback, "path", None)
            if path is not None and path.is_file():
                return f"The last checkpoint is {path}."
        return "No checkpoint was written yet."

    def on_train_batch_start(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        #: the minibatch size every training value is logged with (Lightning cannot infer it
        #: from a dict batch)
        self.train_batch_size = int(batch["image"].shape[0])

    def log_train(self, key: str, value: Tensor | float, per_step: bool = True,
                  prog_bar: bool = False) -> None:
        """Log a training value under the README's key scheme: its epoch mean as
        ``train/<key>`` (every run, however short) and, with ``per_step``, the value itself as
        ``step/<key>`` every ``trainer.log_every_n_steps`` optimiser steps."""
        size = getattr(self, "train_batch_size", None)
        self.log(f"train/{key}", value, on_step=False, on_epoch=True, batch_size=size)
        if per_step:
            self.log(f"step/{key}", value, on_step=True, on_epoch=False, batch_size=size,
                     prog_bar=prog_bar)

    def log_weighting(self, out: WeightingOutput) -> None:
        """Log raw losses, weights and loss scales (w·L) per task (the weighted total is the
        caller's: a single-tasking step sums several passes)."""
        for i, t in enumerate(out.tasks):
            loss, weight = out.loss_tensor[i], out.weight_tensor[i]
            self.log_train(f"loss/{t}", loss)
            self.log_train(f"weight/{t}", weight, per_step=False)
            self.log_train(f"scale/{t}", weight * loss, per_step=False)

    def on_train_epoch_end(self) -> None:
        self.weighting.on_epoch_end()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Gradient-norm clipping (``grad_clip_norm``), in both loops.

        Lightning calls this after the backward (the weighting's, which wrote the combined
        update) and before every optimiser step, in automatic and in manual optimisation, where
        its own ``gradient_clip_val`` is unavailable. The norm is over every parameter the
        optimiser steps (with AMP, of the unscaled gradients).
        """
        if self.grad_clip_norm is not None:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip_norm)

    # -- validation ---------------------------------------------------------------------------
    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        preds = self.net(batch["image"], self.task_names)
        for t, task in self.tasks.items():
            loss = task.loss(preds[t], batch[t])
            self.log(f"val/loss/{t}", loss, on_epoch=True, batch_size=batch["image"].shape[0])
            self.val_metrics[t].update(task.decode(preds[t]), batch[t])

    def on_validation_epoch_start(self) -> None:
        """Under DDP, give every process rank 0's network buffers (BN running statistics)
        before validating.

        Each process updates its running statistics from its own batches, and nothing keeps
        them equal in the single-tasking loop (its passes run the network outside the DDP
        wrapper's forward, which broadcasts buffers). The checkpoint holds rank 0's; without
        this each rank would score its share of the validation images with other statistics
        than the checkpoint's, and a resumed run (all ranks restarted from rank 0's) would
        report other metrics than the same run uninterrupted.
        """
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for buffer in self.net.buffers():
                torch.distributed.broadcast(buffer, src=0)

    def on_validation_epoch_end(self) -> None:
        results: dict[str, dict[str, float]] = {}
        for t, metric in self.val_metrics.items():
            values = metric.compute()
            results[t] = {k: float(v) for k, v in values.items()}
            for k, v in results[t].items():
                self.log(f"val/{t}/{k}", v, sync_dist=False)
            metric.reset()
        self.val_results = results
        #: the optimiser step the results belong to (lets ``run`` skip a repeated final pass)
        self.val_results_step = self.global_step

    # -- optimisation -------------------------------------------------------------------------
    def param_groups(self) -> list[dict]:
        """Parameter groups; subclasses scale the shared group or add their own modules.

        The weighting's learned parameters get their own group without weight decay.
        """
        return [
            {"name": "net", "params": list(self.net.parameters())},
            {"name": "weighting", "params": self.weighting.extra_parameters(), "weight_decay": 0.0},
        ]

    def configure_optimizers(self):
        optimizer = build_optimizer(self.optimizer_cfg, self.param_groups())
        total = self.total_iterations()
        schedule = build_schedule(self.optimizer_cfg, optimizer, total)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": schedule, "interval": "step"},
        }

    def total_iterations(self) -> int:
        """Minibatches in the whole run (the poly schedule's and λ's horizon): estimated when
        the run starts, then taken from its checkpoints, so resuming with another
        ``trainer.max_epochs`` keeps the schedule of the run being continued."""
        if self.horizon is None:
            if self._trainer is None:
                return 1
            self.horizon = max(int(self._trainer.estimated_stepping_batches), 1)
        return self.horizon

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["horizon"] = self.total_iterations()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.horizon = checkpoint.get("horizon")

    def progress(self) -> float:
        """Fraction of the run's minibatches done (drives λ schedules)."""
        it = self.trainer.fit_loop.epoch_loop.total_batch_idx if self._trainer else 0
        return min(it / self.total_iterations(), 1.0)
