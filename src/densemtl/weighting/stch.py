"""STCH (Lin et al., "Smooth Tchebycheff Scalarization for Multi-Objective Optimization",
ICML 2024), in its deep multi-task form (the authors' MTL code).

Warm-up epochs train Σ log L_t; the last warm-up epoch's mean losses are the nadir point n.
Afterwards the objective is the smooth maximum of the normalised log losses,
T · μ log Σ_t exp(log(L_t / n_t) / μ), which tends to T · max_t log(L_t / n_t) as μ → 0 and
to Σ_t log(L_t / n_t) + T μ log T as μ → ∞. Its gradient weights the raw losses by
T · softmax(z / μ)_t / L_t (z = log(L / n)).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from densemtl.weighting.base import finite_option, register_weighting
from densemtl.weighting.loss_based import LossWeighting


@register_weighting
class STCH(LossWeighting):
    """STCH with smoothing ``mu`` 1.0 and ``warmup_epochs`` 5 (= LibMTL's STCH_warmup_epoch 4:
    its epochs 0–4 are log-loss epochs, the last of them averaging the nadir point).

    ``warmup_epochs=0``: no warm-up, the nadir point is 1 for every task.
    """

    name = "stch"
    accepts_task_subset = False

    def __init__(self, tasks: Sequence[str], mu: float = 1.0, warmup_epochs: int = 5) -> None:
        super().__init__(tasks)
        self.mu = finite_option(self.name, "mu", mu)
        if not self.mu > 0 or int(warmup_epochs) != warmup_epochs or warmup_epochs < 0:
            raise ValueError(f"stch needs mu > 0 and an integer warmup_epochs >= 0, got {mu}, "
                             f"{warmup_epochs}")
        self.warmup_epochs = int(warmup_epochs)

    def nadir(self) -> Tensor | None:
        """The nadir point (None during the warm-up): the last warm-up epoch's mean losses."""
        epoch = len(self.history)
        if epoch < self.warmup_epochs:
            return None
        if self.warmup_epochs == 0:
            return torch.ones(self.num_tasks, dtype=torch.float64)
        return torch.tensor(self.history[self.warmup_epochs - 1], dtype=torch.float64)

    def objective(self, losses: Tensor, index: list[int]) -> tuple[Tensor, Tensor]:
        nadir = self.nadir()
        if nadir is None:
            logs = torch.log(losses + 1e-20)
            return logs.sum(), (1.0 / (losses + 1e-20)).detach()
        z = torch.log(losses / nadir.to(losses)[index] + 1e-20)
        t = len(index)
        total = t * self.mu * torch.logsumexp(z / self.mu, dim=0)
        weights = t * torch.softmax(z.detach() / self.mu, dim=0) / (losses.detach() + 1e-20)
        return total, weights
