"""Joint multi-task training: all tasks from one forward pass, automatic optimisation."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from densemtl.training.base import MultiTaskModule
from densemtl.weighting.feed import backward_inputs, loss_samples


class JointModule(MultiTaskModule):
    """Multi-task (or single-task) baseline: one forward for all tasks, combined by the weighting.

    Lightning's automatic optimisation stays in charge (gradient accumulation, clipping, AMP):
    ``training_step`` returns the plain sum of the losses for the progress bar and keeps the
    per-task losses; the ``backward`` hook hands them to the weighting strategy, which runs the
    backward itself (gradient methods need the task losses separately, not their sum). What
    the strategy gets is what its ``needs`` declare (``weighting/feed.py``): the last shared
    layer, the shared parameters or representation, extra loss samples (the minibatch split
    into disjoint chunks) and, after the optimiser step, the losses on the same batch.
    """

    _stepped = False  # whether this batch's backward ran (a NaN step skips it)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor | None:
        self._stepped = False
        samples = loss_samples(self.net, self.tasks, batch, self.task_names,
                               self.weighting.needs.samples)
        if not all(self.losses_finite(losses) for losses in samples):
            return None
        self._step_losses = samples
        return sum(samples[-1].values())

    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        samples, self._step_losses = self._step_losses, None
        self.weighted_backward(
            samples[-1],
            lambda total: super(JointModule, self).backward(total, *args, **kwargs),
            extra_losses=samples[:-1],
        )

    def weighted_backward(
        self,
        losses: Mapping[str, Tensor],
        backward_fn: Callable[[Tensor], None],
        extra_losses: Sequence[Mapping[str, Tensor]] = (),
    ) -> None:
        """Combine ``losses`` by the weighting (given the inputs its ``needs`` declare), run
        ``backward_fn`` on the total, log both."""
        out = self.weighting.backward(
            losses,
            extra_losses=list(extra_losses),
            **backward_inputs(self.weighting, self.net),
            backward_fn=backward_fn,
        )
        self._stepped = True
        self.log_weighting(out)
        self.log_train("loss", out.total, prog_bar=True)

    def on_train_batch_end(self, outputs: Any, batch: Mapping[str, Any], batch_idx: int) -> None:
        """After the optimiser step: the same batch's losses for strategies that need them."""
        if self.weighting.needs.post_step_losses and self._stepped:
            with torch.no_grad():
                self.weighting.after_step(self.task_losses(
                    self.net(batch["image"], self.task_names), batch))
