"""MoCo (Fernando et al., "Mitigating Gradient Bias in Multi-objective Learning", ICLR 2023).

Stochastic MGDA with tracked gradients: y_i ← y_i − β_k (y_i − g_i) (β_k = β / k^{σ_β}),
λ ← Π_Δ(λ − γ_k (YYᵀ + ρI)λ) (γ_k = γ / k^{σ_γ}), and the shared update is Yᵀλ. The tracked
Y (T × P over the shared parameters) is state. The task-specific parts get Σ ∇L_t.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
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
from densemtl.weighting.gradient_based import _as_list, backward_with_update, flat_task_gradients
from densemtl.weighting.solvers import project_simplex

MOCO_NORMALIZATION = ("loss", "none")


def shared_parameter_list(strategy: WeightingStrategy, inputs: StepInputs) -> list[Tensor]:
    """The shared parameters a gradient-matrix strategy was given (a clear error if none)."""
    params = inputs.shared_parameters
    if params is None or isinstance(params, dict):
        raise ValueError(f"{strategy.name} needs shared_parameters= (a list of tensors) in "
                         f"backward()")
    return _as_list(params)


@register_weighting
class MoCo(WeightingStrategy):
    """MoCo with the LibMTL defaults (from the authors' code): β 0.5, σ_β 0.5, γ 0.1, σ_γ 0.5,
    ρ 0. ``normalization="loss"`` (authors' code) rescales each g_t to norm L_t before tracking;
    the paper projects y_i onto a ball instead. λ is projected onto the simplex (paper; the
    LibMTL code uses a softmax)."""

    name = "moco"
    persistent_attrs = ("step", "tracked", "weights")

    def __init__(self, tasks: Sequence[str], beta: float = 0.5, beta_sigma: float = 0.5,
                 gamma: float = 0.1, gamma_sigma: float = 0.5, rho: float = 0.0,
                 normalization: str = "loss") -> None:
        super().__init__(tasks)
        for key, value in [("beta", beta), ("beta_sigma", beta_sigma), ("gamma", gamma),
                           ("gamma_sigma", gamma_sigma), ("rho", rho)]:
            setattr(self, key, finite_option(self.name, key, value))
        if normalization not in MOCO_NORMALIZATION:
            raise ValueError(f"moco normalization must be one of {MOCO_NORMALIZATION}, "
                             f"got {normalization!r}")
        self.normalization = normalization
        self.step = 0
        self.tracked: Tensor | None = None
        self.weights: list[float] = [1.0 / self.num_tasks] * self.num_tasks

    @property
    def needs(self) -> Needs:
        return Needs(wrt="shared_parameters", gradients="matrix")

    def _backward(self, losses: Tensor, index: list[int], inputs: StepInputs,
                  backward_fn: BackwardFn) -> tuple[Tensor, Tensor]:
        params = shared_parameter_list(self, inputs)
        jac = flat_task_gradients(losses, params).detach()
        sample = jac
        if self.normalization == "loss":
            norms = jac.norm(dim=1, keepdim=True)
            sample = jac / (norms + 1e-8) * losses.detach()[:, None]
        self.step += 1
        if self.tracked is None:
            self.tracked = torch.zeros_like(sample)
        tracked = self.tracked.to(sample)
        tracked = tracked - (self.beta / self.step**self.beta_sigma) * (tracked - sample)
        self.tracked = tracked
        gram = (tracked @ tracked.T).double().cpu().numpy()
        lam = np.array(self.weights)
        gamma = self.gamma / self.step**self.gamma_sigma
        lam = project_simplex(lam - gamma * (gram @ lam + self.rho * lam))
        self.weights = lam.tolist()
        weights = torch.as_tensor(lam, dtype=tracked.dtype, device=tracked.device)
        backward_with_update(losses.sum(), params, jac.sum(0), weights @ tracked, backward_fn)
        return weights, (weights * losses).sum()
