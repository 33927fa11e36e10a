"""UPGrad (Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024).

Each task gradient g_i is projected onto the dual cone {x : Jx ≥ 0} of all task gradients (the
directions that increase no loss), and the projections are averaged with preference weights p
(default 1/T). In the dual, the projection of p_i g_i is Jᵀw with w = argmin_{v ≥ p_i e_i} vᵀGv,
a Gram-only quadratic programme, so UPGrad is one more ``GramStrategy``: c = Σ_i w_i.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.optimize import nnls

from densemtl.weighting.base import register_weighting, task_vector
from densemtl.weighting.gradient_based import GramStrategy
from densemtl.weighting.solvers import _as_gram


def dual_cone_weights(gram: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """argmin_{v ≥ lower} vᵀGv, exactly (Lawson–Hanson active set on a square factor of G).

    With G = LLᵀ (eigen-decomposition, negative rounding eigenvalues dropped) and v = lower + u,
    vᵀGv = ‖Lᵀu + Lᵀlower‖², a non-negative least-squares problem in u. G is divided by its
    largest diagonal entry first (the minimiser does not change).
    """
    g = _as_gram(gram)
    scale = np.diag(g).max()
    if scale <= 0:
        return np.array(lower, dtype=np.float64)
    lam, vec = np.linalg.eigh(g / scale)
    keep = lam > lam.max() * len(g) * np.finfo(np.float64).eps
    factor = (vec[:, keep] * np.sqrt(lam[keep])[None, :]).T  # Lᵀ, rank × T
    u = nnls(factor, -factor @ lower, maxiter=50 * len(g))[0]
    return lower + u


def upgrad_coefficients(gram: np.ndarray, preference: np.ndarray | None = None) -> np.ndarray:
    """c = Σ_i argmin_{v ≥ p_i e_i} vᵀGv (p = 1/T by default): the mean of the projections."""
    t = len(gram)
    p = np.full(t, 1.0 / t) if preference is None else np.asarray(preference, dtype=np.float64)
    return sum(dual_cone_weights(gram, p[i] * np.eye(t)[i]) for i in range(t))


@register_weighting
class UPGrad(GramStrategy):
    """UPGrad: the preference-weighted mean of the task gradients projected onto the dual cone.

    ``preference``: a per-task vector (list or dict), normalised to sum 1; default uniform.
    Exact (non-negative least squares), with no regularisation of G (torchjd adds 1e-4 to the
    normalised G's diagonal before its QP; the test states the relation).
    """

    name = "upgrad"

    def __init__(self, tasks: Sequence[str], space: str | None = None,
                 preference: Sequence[float] | Mapping[str, float] | None = None) -> None:
        super().__init__(tasks, space)
        if preference is None:
            self.preference = None
        else:
            p = np.array(task_vector(preference, self.tasks, "upgrad preference"))
            self.preference = p / p.sum()

    def coefficients(self, gram: np.ndarray, losses: np.ndarray) -> np.ndarray:
        return upgrad_coefficients(gram, self.preference)
