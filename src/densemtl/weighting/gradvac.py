"""GradVac (Wang et al., "Gradient Vaccine", ICLR 2021): pairwise cosine targets kept as EMAs.

For each task i, in a random order of the other tasks j: if the cosine φ_ij between the
(already modified) g_i' and g_j is below the target φ̂_ij, add to g_i' the multiple of g_j that
lifts the cosine to exactly φ̂_ij,

    g_i' += g_j · ‖g_i'‖ (φ̂_ij √(1 − φ_ij²) − φ_ij √(1 − φ̂_ij²)) / (‖g_j‖ √(1 − φ̂_ij²)),

then φ̂_ij ← (1 − β) φ̂_ij + β φ_ij. The update is Σ_i g_i'. Every g_i' is Σ_k C_ik g_k, so
norms and inner products come from the Gram matrix (‖g_i'‖² = C_i G C_iᵀ). With φ̂ = 0 it is
PCGrad. Applied to the whole shared gradient (the paper also groups by layer).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from densemtl.weighting.base import finite_option, register_weighting
from densemtl.weighting.gradient_based import GramStrategy
from densemtl.weighting.solvers import _as_gram


def gradvac_coefficients(gram: np.ndarray, targets: np.ndarray, orders: np.ndarray,
                         beta: float) -> tuple[np.ndarray, np.ndarray]:
    """(c with Σ c_t g_t = Σ_i g_i', the updated targets φ̂) for projection orders ``orders[i]``.

    ``orders[i]`` lists the tasks j ≠ i in the order task i visits them. Tasks with a zero
    gradient are neither corrected nor used as a direction.
    """
    g = _as_gram(gram)
    t = len(g)
    phi_hat = np.array(targets, dtype=np.float64)
    coef = np.eye(t)
    norms = np.sqrt(np.maximum(np.diag(g), 0.0))
    for i in range(t):
        for j in orders[i]:
            cg = coef[i] @ g
            norm_i = np.sqrt(max(cg @ coef[i], 0.0))
            if norm_i == 0 or norms[j] == 0:
                continue
            phi = float(np.clip(cg[j] / (norm_i * norms[j]), -1.0, 1.0))
            target = phi_hat[i, j]
            if phi < target:
                root_hat = np.sqrt(max(1.0 - target**2, 0.0))
                coef[i, j] += norm_i * (target * np.sqrt(max(1.0 - phi**2, 0.0))
                                        - phi * root_hat) / (norms[j] * root_hat)
            phi_hat[i, j] = (1.0 - beta) * target + beta * phi
    return coef.sum(axis=0), phi_hat


@register_weighting
class GradVac(GramStrategy):
    """GradVac with EMA rate ``beta`` (paper: 0.01; LibMTL's default is 0.5), seeded orders.

    The targets φ̂ (T×T, start 0) and the RNG are state: a resumed run continues exactly.
    """

    name = "gradvac"
    persistent_attrs = ("targets",)

    def __init__(self, tasks: Sequence[str], space: str | None = None, beta: float = 0.01,
                 seed: int = 0) -> None:
        super().__init__(tasks, space)
        self.beta = finite_option(self.name, "beta", beta)
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"gradvac beta must be in [0, 1], got {beta}")
        self.targets: list[list[float]] = [[0.0] * self.num_tasks for _ in self.tasks]
        self._seed(seed)

    def coefficients(self, gram: np.ndarray, losses: np.ndarray) -> np.ndarray:
        t = self.num_tasks
        orders = []
        for i in range(t):
            others = [j for j in range(t) if j != i]
            orders.append([others[k] for k in torch.randperm(t - 1, generator=self.generator)])
        coef, targets = gradvac_coefficients(gram, np.array(self.targets), orders, self.beta)
        self.targets = targets.tolist()
        return coef
