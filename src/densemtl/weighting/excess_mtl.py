"""ExcessMTL (He et al., "Robust Multi-Task Learning with Excess Risks", ICML 2024).

Each task's excess risk is estimated by a second-order expansion with an AdaGrad-style diagonal
Hessian: r_t = Σ_p g_tp² / √(Σ_steps g_tp² + 1e-7) over the shared parameters (the squared-
gradient sums, T × P, are state), normalised by its value at the first step; the weights move
by exponentiated gradient, w_t ← w_t exp(η r_t), renormalised to sum T (official code; the
paper's simplex weights are these divided by T). Then Σ w_t L_t is trained.
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
from densemtl.weighting.gradient_based import flat_task_gradients
from densemtl.weighting.moco import shared_parameter_list


def excess_risks(jac: Tensor, squared_sum: Tensor) -> Tensor:
    """r_t = Σ_p g_tp² / √(S_tp + 1e-7), with S the squared sums including this step."""
    return (jac**2 / torch.sqrt(squared_sum + 1e-7)).sum(1)


@register_weighting
class ExcessMTL(WeightingStrategy):
    """ExcessMTL with step size η = ``robust_step_size`` (1e-2, LibMTL/official default).

    The first step only records r (its baseline), as the official code does; weights start 1.
    """

    name = "excess_mtl"
    persistent_attrs = ("weights", "squared_sum", "initial")

    def __init__(self, tasks: Sequence[str], robust_step_size: float = 1e-2) -> None:
        super().__init__(tasks)
        self.robust_step_size = finite_option(self.name, "robust_step_size", robust_step_size)
        if not self.robust_step_size > 0:
            raise ValueError(f"excess_mtl robust_step_size must be > 0, got {robust_step_size}")
        self.weights: list[float] = [1.0] * self.num_tasks
        self.squared_sum: Tensor | None = None
        self.initial: list[float] | None = None

    @property
    def needs(self) -> Needs:
        return Needs(wrt="shared_parameters", gradients="matrix")

    def _backward(self, losses: Tensor, index: list[int], inputs: StepInputs,
                  backward_fn: BackwardFn) -> tuple[Tensor, Tensor]:
        jac = flat_task_gradients(losses, shared_parameter_list(self, inputs)).detach()
        squared = jac**2
        self.squared_sum = squared if self.squared_sum is None else \
            self.squared_sum.to(squared) + squared
        risks = excess_risks(jac, self.squared_sum).double().cpu()
        if self.initial is None:
            self.initial = risks.tolist()
        else:
            w = torch.tensor(self.weights, dtype=torch.float64)
            w = w * torch.exp(self.robust_step_size * risks / torch.tensor(self.initial,
                                                                           dtype=torch.float64))
            self.weights = (self.num_tasks * w / w.sum()).tolist()
        weights = torch.tensor(self.weights, dtype=losses.dtype, device=losses.device)
        total = (weights * losses).sum()
        backward_fn(total)
        return weights, total
