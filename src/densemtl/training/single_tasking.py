"""Attentive single-tasking (ASTMT): one task per pass, manual optimisation, adversarial loss.

Two update schedules (SPEC §2):

* ``per_task`` — the paper's: for every minibatch, each task in turn runs a task-conditioned pass
  and takes its own optimiser step (task t+1 sees the weights after task t's step). Shared layers
  get T updates per minibatch, so their learning rate is divided by T (appendix D). Gradients are
  reset to ``None`` before every pass, so task-specific parameters of the other tasks have no
  gradient and SGD/Adam leave them (and their momentum) untouched.
* ``accumulated`` — all tasks in one call (which the stacked-batch and shared-encoder execution
  modes compute in one pass), the task gradients summed, one optimiser step.

The step itself is plain PyTorch (:func:`single_tasking_step`), so it is tested without a
Trainer; the Lightning module only supplies ``manual_backward`` and cross-process agreement.
Under DDP every process runs the same task passes (the order is fixed by config, and skipping a
non-finite pass is agreed across processes), takes the feature gradient with
``autograd.grad(create_graph=True)`` and does exactly one ``manual_backward`` per pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from densemtl.models.adversarial import (
    AdversarialOptions,
    TaskDiscriminator,
    adversarial_loss,
    combine_losses,
    task_gradient,
)
from densemtl.tasks import Task
from densemtl.training.base import MultiTaskModule
from densemtl.weighting import WeightingOutput, WeightingStrategy, subset_weightings
from densemtl.weighting.feed import backward_inputs, loss_samples

SCHEDULES = ("per_task", "accumulated")


@dataclass
class Adversary:
    """The adversarial term of Eq. 5: discriminator, its weight w_d and the current λ."""

    discriminator: TaskDiscriminator
    w_d: float
    lambd: float


def single_tasking_step(
    net: nn.Module,
    tasks: Mapping[str, Task],
    weighting: WeightingStrategy,
    batch: Mapping[str, Any],
    passes: Sequence[Sequence[str]],
    optimizer: Any,
    backward: Callable[[Tensor], None] = Tensor.backward,
    adversary: Adversary | None = None,
    agree: Callable[[Mapping[str, Tensor]], bool] | None = None,
) -> list[tuple[WeightingOutput, Tensor | None]]:
    """Run the task ``passes`` of one minibatch, one optimiser step per pass.

    Each pass: zero the gradients (to ``None``), forward the pass's tasks, let ``weighting``
    combine their losses, add ``w_d·L_D`` on the task gradients at ``net.features`` when an
    adversary is given (Eq. 5: ``(1 − w_d)·Σ w_t L_t + w_d·L_D``), one ``backward``, one step.
    ``agree(losses)`` decides whether the pass's losses are usable (all processes must agree);
    a rejected pass is skipped. The strategy gets what its ``needs`` declare
    (``weighting/feed.py``), as in the joint loop. Returns each run pass's weighting output and
    adversarial loss.
    """
    task_names = list(tasks)
    needs = weighting.needs
    done = []
    for pass_tasks in passes:
        optimizer.zero_grad(set_to_none=True)
        samples = loss_samples(net, tasks, batch, pass_tasks, needs.samples)
        if agree is not None and not all(agree(losses) for losses in samples):
            continue
        disc: list[Tensor] = []

        def pass_backward(total: Tensor, pass_tasks=pass_tasks, disc=disc) -> None:
            if adversary is not None:
                grads = [task_gradient(total, net.features[t]) for t in pass_tasks]
                index = [task_names.index(t) for t in pass_tasks]
                disc.append(adversarial_loss(grads, index, adversary.discriminator,
                                             adversary.lambd))
                total = combine_losses(total, disc[0], adversary.w_d)
            backward(total)

        out = weighting.backward(samples[-1], extra_losses=samples[:-1],
                                 **backward_inputs(weighting, net), backward_fn=pass_backward)
        optimizer.step()
        if needs.post_step_losses:
            with torch.no_grad():
                preds = net(batch["image"], list(pass_tasks))
                weighting.after_step({t: tasks[t].loss(preds[t], batch[t]) for t in pass_tasks})
        done.append((out, disc[0].detach() if disc else None))
    return done


class SingleTaskingModule(MultiTaskModule):
    """Trains a task-conditioned network one task at a time (ASTMT §3–5, appendix D)."""

    def __init__(
        self,
        *args: Any,
        schedule: str = "per_task",
        task_order: Sequence[str] | None = None,
        adversarial: Mapping[str, Any] | None = None,
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
        if schedule == "per_task" and len(order) > 1 and not self.weighting.accepts_task_subset:
            raise ValueError(
                f"weighting {self.weighting.name!r} needs every task's loss at once; use "
                f"model.schedule=accumulated or a per-task weighting "
                f"({', '.join(subset_weightings())})"
            )
        adv = AdversarialOptions.from_config(adversarial)
        self.discriminator: TaskDiscriminator | None = None
        if adv.enabled:
            self._check_adversarial()
            self.w_d = adv.w_d
            self.reversal = adv.schedule()
            self.disc_lr_scale = adv.lr_scale
            self.discriminator = TaskDiscriminator(
                self.net.feature_width,
                len(self.task_names),
                hidden=adv.hidden,
                kernel_size=adv.kernel_size,
            )

    def _check_adversarial(self) -> None:
        needs = self.weighting.needs
        if needs.wrt in ("shared_parameters", "representation") or needs.samples > 1:
            raise ValueError(
                f"adversarial training combines with loss-based weightings (and GradNorm) "
                f"only, not {self.weighting.name!r}"
            )
        if self.schedule == "accumulated" and not self.net.per_task_features:
            raise ValueError(
                "adversarial training with model.schedule=accumulated needs per-task decoder "
                "features (a task-conditioned decoder); use model.schedule=per_task"
            )

    # -- parameter groups: shared lr / T in the per-task schedule -----------------------------
    def param_groups(self) -> list[dict]:
        n_tasks = len(self.task_names)
        shared_scale = 1.0 / n_tasks if self.schedule == "per_task" else 1.0
        groups = [
            {"name": "shared", "params": self.net.shared_parameters(), "lr_scale": shared_scale}
        ]
        for t in self.task_names:
            groups.append({"name": f"task/{t}", "params": self.net.task_parameters(t)})
        if self.discriminator is not None:
            groups.append({"name": "discriminator", "lr_scale": self.disc_lr_scale,
                           "params": list(self.discriminator.parameters())})
        groups.append({"name": "weighting", "params": self.weighting.extra_parameters(),
                       "weight_decay": 0.0})
        return groups

    def adversary(self) -> Adversary | None:
        """The adversarial term at the current training progress (λ from the schedule)."""
        if self.discriminator is None:
            return None
        return Adversary(self.discriminator, self.w_d, self.reversal(self.progress()))

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        if self.schedule == "per_task":
            passes = [[t] for t in self.task_order]
        else:
            passes = [list(self.task_order)]
        done = single_tasking_step(
            self.net, self.tasks, self.weighting, batch, passes, self.optimizers(),
            backward=self.manual_backward, adversary=self.adversary(), agree=self.losses_finite,
        )
        self.lr_schedulers().step()
        for out, disc in done:
            self.log_weighting(out)
            if disc is not None:
                self.log_train("adversarial", disc)
        if done:
            self.log_train("loss", sum(out.total for out, _ in done), prog_bar=True)
