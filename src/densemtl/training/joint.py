"""Joint multi-task training: all tasks from one forward pass, automatic optimisation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from densemtl.training.base import MultiTaskModule


class JointModule(MultiTaskModule):
    """Multi-task (or single-task) baseline: one forward for all tasks, Σ_t w_t L_t.

    The loss weights are the tasks' own ``weight`` (SPEC §1 defaults or the config's).
    """

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor | None:
        preds = self.net(batch["image"], self.task_names)
        losses = self.task_losses(preds, batch)
        if not self.losses_finite(losses):
            return None
        weights = {t: self.tasks[t].weight for t in losses}
        self.log_losses(losses, weights)
        total = sum(weights[t] * losses[t] for t in losses)
        self.log("train/loss", total.detach(), prog_bar=True)
        return total
