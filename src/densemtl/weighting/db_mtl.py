"""DB-MTL (Lin et al., "Dual-Balancing for Multi-Task Learning", 2023).

Loss-scale balancing: train on log L_t. Gradient-magnitude balancing: keep an EMA ĝ_t of each
task's gradient of log L_t over the shared parameters (ĝ_t ← β_k ĝ_t + (1 − β_k) g_t,
β_k = β / k^σ, ĝ = 0 at the start) and update the shared parameters with
max_t ‖ĝ_t‖ · Σ_t ĝ_t / ‖ĝ_t‖: every task's normalised gradient, scaled to the largest norm.
The task-specific parts get Σ ∇ log L_t. The EMA (T × P) is state.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from densemtl.weighting.base import (
    BackwardFn,
    Needs,
    StepInputs,
    WeightingStrategy,
    finite_option,
    register_weighting,
)
from densemtl.weighting.gradient_based import backward_with_update, flat_task_gradients
from densemtl.weighting.moco import shared_parameter_list


@register_weighting
class DBMTL(WeightingStrategy):
    """DB-MTL with β 0.9 and σ 0 (the paper's and LibMTL's defaults).

    The logged weight of task t is α_t / L_t, α_t = max_s ‖ĝ_s‖ / ‖ĝ_t‖: its coefficient on
    ∇L_t were the EMA the current gradient.
    """

    name = "db_mtl"
    persistent_attrs = ("step", "buffer")

    def __init__(self, tasks: Sequence[str], beta: float = 0.9, beta_sigma: float = 0.0
                 ) -> None:
        super().__init__(tasks)
        self.beta = finite_option(self.name, "beta", beta)
        self.beta_sigma = finite_option(self.name, "beta_sigma", beta_sigma)
        if not 0.0 <= self.beta < 1.0:
            raise ValueError(f"db_mtl beta must be in [0, 1), got {beta}")
        self.step = 0
        self.buffer: Tensor | None = None

    @property
    def needs(self) -> Needs:
        return Needs(wrt="shared_parameters", gradients="matrix")

    def _backward(self, losses: Tensor, index: list[int], inputs: StepInputs,
                  backward_fn: BackwardFn) -> tuple[Tensor, Tensor]:
        params = shared_parameter_list(self, inputs)
        logs = torch.log(losses + 1e-8)
        jac = flat_task_gradients(logs, params).detach()
        self.step += 1
        buffer = torch.zeros_like(jac) if self.buffer is None else self.buffer.to(jac)
        buffer = jac + (self.beta / self.step**self.beta_sigma) * (buffer - jac)
        self.buffer = buffer
        norms = buffer.norm(dim=1)
        alpha = norms.max() / (norms + 1e-8)
        backward_with_update(logs.sum(), params, jac.sum(0), alpha @ buffer, backward_fn)
        return (alpha / (losses.detach() + 1e-8)), logs.sum()
