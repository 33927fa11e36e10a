"""MoDo (Chen, Fernando, Ying & Chen, "Three-Way Trade-Off in Multi-Objective Learning",
NeurIPS 2023 / JMLR 2024): stochastic MGDA with double sampling.

λ ← Π_Δ(λ − γ (J₁J₂ᵀλ + ρλ)) from two independent samples, then the parameters move along
J₃ᵀλ of a third. One projected-gradient step on λ per training step (λ is state).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from densemtl.weighting.base import finite_option, register_weighting
from densemtl.weighting.gradient_based import SampledGramStrategy
from densemtl.weighting.solvers import project_simplex


def modo_step(weights: np.ndarray, cross: np.ndarray, gamma: float, rho: float) -> np.ndarray:
    """One MoDo update of λ: Π_Δ(λ − γ (Aλ + ρλ)) with A = J₁J₂ᵀ."""
    return project_simplex(weights - gamma * (cross @ weights + rho * weights))


@register_weighting
class MoDo(SampledGramStrategy):
    """MoDo with step size ``gamma`` (1e-3) and ℓ2 term ``rho`` (0.1), the LibMTL defaults
    (from the authors' code); λ starts at 1/T."""

    name = "modo"
    persistent_attrs = ("weights",)

    def __init__(self, tasks: Sequence[str], space: str | None = None, gamma: float = 1e-3,
                 rho: float = 0.1) -> None:
        super().__init__(tasks, space)
        self.gamma = finite_option(self.name, "gamma", gamma)
        self.rho = finite_option(self.name, "rho", rho)
        if not self.gamma > 0 or self.rho < 0:
            raise ValueError(f"modo needs gamma > 0 and rho >= 0, got {gamma}, {rho}")
        self.weights: list[float] = [1.0 / self.num_tasks] * self.num_tasks

    def sample_coefficients(self, cross: np.ndarray) -> np.ndarray:
        new = modo_step(np.array(self.weights), cross, self.gamma, self.rho)
        self.weights = new.tolist()
        return new
