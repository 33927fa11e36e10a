"""Joint multi-task training: all tasks from one forward pass, automatic optimisation."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

from densemtl.training.base import MultiTaskModule
from densemtl.weighting.gradient_based import GradNorm


class JointModule(MultiTaskModule):
    """Multi-task (or single-task) baseline: one forward for all tasks, combined by the weighting.

    Lightning's automatic optimisation stays in charge (gradient accumulation, clipping, AMP):
    ``training_step`` returns the plain sum of the losses for the progress bar and keeps the
    per-task losses; the ``backward`` hook hands them to the weighting strategy, which runs the
    backward itself (gradient methods need the task losses separately, not their sum).
    """

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor | None:
        preds = self.net(batch["image"], self.task_names)
        losses = self.task_losses(preds, batch)
        if not self.losses_finite(losses):
            return None
        self._step_losses = losses
        return sum(losses.values())

    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        losses, self._step_losses = self._step_losses, None
        self.weighted_backward(
            losses, lambda total: super(JointModule, self).backward(total, *args, **kwargs)
        )

    def weighted_backward(
        self, losses: Mapping[str, Tensor], backward_fn: Callable[[Tensor], None]
    ) -> None:
        """Combine ``losses`` by the weighting, run ``backward_fn`` on the total, log both."""
        # GradNorm balances gradient norms at the last shared layer only (Chen et al. 2018)
        gradnorm = isinstance(self.weighting, GradNorm)
        out = self.weighting.backward(
            losses,
            shared_parameters=(
                self.net.last_shared_parameters() if gradnorm else self.net.shared_parameters()
            ),
            representation=self.net.shared_representation,
            backward_fn=backward_fn,
        )
        self.log_weighting(out)
        self.log_train("loss", out.total, prog_bar=True)
