"""FairGrad (Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from densemtl.weighting import solvers
from densemtl.weighting.base import finite_option, register_weighting
from densemtl.weighting.gradient_based import GramStrategy


@register_weighting
class FairGrad(GramStrategy):
    """FairGrad: the update d = Σ w_t g_t whose utilities g_tᵀd are α-fair: Gw = w^{-1/α}.

    ``alpha`` (paper/LibMTL default 1.0) trades efficiency for fairness: α = 1 is proportional
    fairness, the same system as Nash-MTL's α_i (Gα)_i = 1; α → ∞ approaches max-min fairness.
    Solved exactly by damped Newton on a strictly convex potential (``solvers``), where the
    official code runs scipy's bounded least squares.
    """

    name = "fairgrad"

    def __init__(self, tasks: Sequence[str], space: str | None = None, alpha: float = 1.0
                 ) -> None:
        super().__init__(tasks, space)
        self.alpha = finite_option(self.name, "alpha", alpha)
        if not self.alpha > 0:
            raise ValueError(f"fairgrad alpha must be > 0, got {alpha}")

    def coefficients(self, gram: np.ndarray, losses: np.ndarray) -> np.ndarray:
        return solvers.alpha_fair_coefficients(gram, self.alpha)
