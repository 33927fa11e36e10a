"""Attentive single-tasking (ASTMT): one task per pass, manual optimisation, adversarial loss.

Two update schedules (SPEC §2):

* ``per_task`` — the paper's: for every minibatch, each task in turn runs a task-conditioned pass
  and takes its own optimiser step (task t+1 sees the weights after task t's step). Shared layers
  get T updates per minibatch, so their learning rate is divided by T (appendix D). Gradients are
  reset to ``None`` before every pass, so task-specific parameters of the other tasks have no
  gradient and SGD/Adam leave them (and their momentum) untouched.
* ``accumulated`` — the T task gradients are summed and one step is taken; this is what the
  stacked-batch and shared-encoder execution modes compute in a single pass.

Under DDP every process runs the same task passes (the order is fixed by config, and skipping a
non-finite step is agreed across processes), takes the feature gradient with
``autograd.grad(create_graph=True)`` and does exactly one ``manual_backward`` per pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from densemtl.models.discriminator import (
    ReversalSchedule,
    TaskDiscriminator,
    adversarial_loss,
    combine_losses,
    task_gradient,
)
from densemtl.training.base import MultiTaskModule

SCHEDULES = ("per_task", "accumulated")


class SingleTaskingModule(MultiTaskModule):
    """Trains a task-conditioned network one task at a time (ASTMT §3–5, appendix D)."""

    def __init__(
        self,
        *args: Any,
        schedule: str = "per_task",
        task_order: Sequence[str] | None = None,
        adversarial: Mapping[str, Any] | None = None,
        feature_channels: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False
        if schedule not in SCHEDULES:
            raise ValueError(f"model.schedule={schedule!r} is not one of {', '.join(SCHEDULES)}")
        self.schedule = schedule
        order = list(task_order) if task_order else list(self.task_names)
        if sorted(order) != sorted(self.task_names):
            raise ValueError(
                f"model.task_order={order} must list each task exactly once: {self.task_names}"
            )
        self.task_order = order
        adv = dict(adversarial or {})
        self.adversarial = bool(adv.get("enabled", False))
        self.discriminator: TaskDiscriminator | None = None
        if self.adversarial:
            if feature_channels is None:
                raise ValueError("the adversarial loss needs the decoder feature width")
            self.w_d = float(adv.get("w_d", 0.1))
            if not 0.0 <= self.w_d <= 1.0:
                raise ValueError(f"adversarial.w_d must be in [0, 1], got {self.w_d}")
            kind = adv.get("lambda_schedule", "constant")
            self.reversal = ReversalSchedule(
                kind, float(adv.get("lambda", 1.0)) if kind == "constant" else None
            )
            self.disc_lr_scale = float(adv.get("lr_scale", 1.0))
            self.discriminator = TaskDiscriminator(
                feature_channels,
                len(self.task_names),
                hidden=int(adv.get("hidden", 64)),
                kernel_size=int(adv.get("kernel_size", 1)),
            )

    # -- parameter groups: shared lr / T in the per-task schedule -----------------------------
    def param_groups(self) -> list[dict]:
        n_tasks = len(self.task_names)
        shared_scale = 1.0 / n_tasks if self.schedule == "per_task" else 1.0
        groups = [{"name": "shared", "params": list(self.net.shared_parameters()),
                   "lr_scale": shared_scale}]
        for t in self.task_names:
            groups.append({"name": f"task/{t}", "params": list(self.net.task_parameters(t))})
        if self.discriminator is not None:
            groups.append({"name": "discriminator", "lr_scale": self.disc_lr_scale,
                           "params": list(self.discriminator.parameters())})
        return groups

    def current_lambda(self) -> float:
        """Gradient-reversal strength now: constant, or the Ganin schedule over progress."""
        return self.reversal(self.progress())

    # -- one pass -----------------------------------------------------------------------------
    def pass_objective(
        self, preds: Mapping[str, Tensor], batch: Mapping[str, Any]
    ) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
        """Objective of the tasks in ``preds``: (1 − w_d)·Σ w_t L_t + w_d·L_D (Eq. 5)."""
        losses = self.task_losses(preds, batch)
        weighted = sum(self.tasks[t].weight * losses[t] for t in losses)
        if self.discriminator is None:
            return weighted, losses, None
        grads = [task_gradient(self.tasks[t].weight * losses[t], self.net.features[t])
                 for t in losses]
        indices = [self.task_names.index(t) for t in losses]
        disc = adversarial_loss(grads, indices, self.discriminator, self.current_lambda())
        return combine_losses(weighted, disc, self.w_d), losses, disc

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        opt = self.optimizers()
        schedule = self.lr_schedulers()
        images = batch["image"]
        if self.schedule == "per_task":
            passes = [[t] for t in self.task_order]
        else:
            passes = [list(self.task_order)]
        logged: dict[str, Tensor] = {}
        for tasks in passes:
            opt.zero_grad(set_to_none=True)
            preds = self.net(images, tasks)
            objective, losses, disc = self.pass_objective(preds, batch)
            if not self.losses_finite({**losses, "objective": objective}):
                continue
            self.manual_backward(objective)
            opt.step()
            logged.update(losses)
            if disc is not None:
                self.log("train/adversarial", disc.detach(), on_step=True, on_epoch=True)
        schedule.step()
        if logged:
            self.log_losses(logged, {t: self.tasks[t].weight for t in logged})
            total = sum(self.tasks[t].weight * v.detach() for t, v in logged.items())
            self.log("train/loss", total, prog_bar=True)

    def on_train_epoch_end(self) -> None:
        self.log("train/lr_shared", self.optimizers().param_groups[0]["lr"])

