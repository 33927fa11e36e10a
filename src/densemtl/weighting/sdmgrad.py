"""SDMGrad (Xiao, Ban & Ji, "Direction-oriented Multi-objective Learning", NeurIPS 2023).

The direction is pulled toward the mean gradient g₀: w minimises ‖J(w + λw̃)‖² over the simplex
(w̃ = 1/T), estimated without bias from two samples by the inner projected-SGD steps
w ← Π_Δ(w − lr·v), v ← μv + A(w + λw̃), A = J₁J₂ᵀ / s² with s the mean of √diag(A) (the official
code's scale normalisation); the update is J₃ᵀ(w + λw̃)/(1 + λ) of a third sample.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from densemtl.weighting.base import finite_option, register_weighting
from densemtl.weighting.gradient_based import SampledGramStrategy
from densemtl.weighting.solvers import project_simplex


def sdmgrad_step(weights: np.ndarray, cross: np.ndarray, lambd: float, lr: float,
                 momentum: float, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """(new w, coefficients (w + λw̃)/(1 + λ)) after ``iterations`` inner steps from ``weights``."""
    t = len(weights)
    prior = np.full(t, 1.0 / t)
    scale = np.sqrt(np.maximum(np.diag(cross), 0.0)).mean()
    a = cross / (scale**2 + 1e-8)
    w, velocity = np.array(weights, dtype=np.float64), None
    for _ in range(iterations):
        grad = a @ (w + lambd * prior)
        velocity = grad if velocity is None else momentum * velocity + grad
        w = project_simplex(w - lr * velocity)
    return w, (w + lambd * prior) / (1.0 + lambd)


@register_weighting
class SDMGrad(SampledGramStrategy):
    """SDMGrad: ``lambd`` 0.3 (the paper's experiments), 20 inner steps of SGD with ``lr`` 10
    and momentum 0.5 (official code; LibMTL uses lr 5); w (start 1/T) persists across steps."""

    name = "sdmgrad"
    persistent_attrs = ("weights",)

    def __init__(self, tasks: Sequence[str], space: str | None = None, lambd: float = 0.3,
                 lr: float = 10.0, momentum: float = 0.5, iterations: int = 20) -> None:
        super().__init__(tasks, space)
        self.lambd = finite_option(self.name, "lambd", lambd)
        self.lr = finite_option(self.name, "lr", lr)
        self.momentum = finite_option(self.name, "momentum", momentum)
        if self.lambd < 0 or not self.lr > 0 or not 0 <= self.momentum < 1 or iterations < 1:
            raise ValueError("sdmgrad needs lambd >= 0, lr > 0, 0 <= momentum < 1, "
                             f"iterations >= 1; got {lambd}, {lr}, {momentum}, {iterations}")
        self.iterations = int(iterations)
        self.weights: list[float] = [1.0 / self.num_tasks] * self.num_tasks

    def sample_coefficients(self, cross: np.ndarray) -> np.ndarray:
        w, coef = sdmgrad_step(np.array(self.weights), cross, self.lambd, self.lr,
                               self.momentum, self.iterations)
        self.weights = w.tolist()
        return coef
